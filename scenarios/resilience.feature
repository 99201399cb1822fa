@resilience @serial
Feature: Resilience
  A service that crashes and comes back finishes what it started, exactly once;
  the connector resumes from where it stopped, so no event is lost. A crash
  (killed) is answered by the service's restart policy; a stop is not, so a
  stopped service stays down until started again. These scenarios stop parts
  of the shared bank, so they run alone.

  Scenario: The payments service is killed mid-payment and started again
    Given Alice has £100.00
    And the payment scheme answers Alice's payments slowly
    When Alice pays £10.00 to Carol at 20-00-00 12345678
    And the payment scheme has received that payment
    And the payments service is killed
    And the payments service is started again
    Then the payment is completed
    And Alice's balance is £90.00
    And the payment scheme settled that payment once

  Scenario: The accounts service restarts while a payment settles
    Given Alice has £100.00
    And the payment scheme answers Alice's payments slowly
    When Alice pays £10.00 to Carol at 20-00-00 12345678
    And the accounts service is restarted
    Then the payment is completed
    And Alice's balance is £90.00

  Scenario: The connector is stopped and started again: no event is lost
    Given Alice has £100.00
    When the connector is stopped
    And Alice pays £10.00 to Carol at 20-00-00 12345678
    Then the payment is completed
    And no `payment.completed` event for that payment is published while the connector is down
    When the connector is started again
    Then a `payment.completed` event for that payment is published

  Scenario: Monitoring catches up after a crash
    Given Alice has £10,000.00
    When the monitoring service is killed
    And Alice pays £6,000.00 to Carol at 20-00-00 12345678
    And the monitoring service is started again
    Then a suspicious-transaction alert is raised for that payment

  Scenario: A crashed service comes back by itself, by its restart policy
    Given Alice has £100.00
    When the accounts service is killed
    Then the accounts service is back by its restart policy
    When Alice pays £10.00 to Carol at 20-00-00 12345678
    Then the payment is completed
    And Alice's balance is £90.00
