@alerts
Feature: Suspicious-transaction alerts
  Monitoring screens every payment and top-up from Kafka, asks the screening
  vendor for a risk score, and raises an alert for an analyst when a rule trips:
  a large amount (£5,000.00), three payments within a minute, a first payment of
  £1,000.00 or more to a new payee, or a vendor score of 80 or more.

  Scenario: A large payment raises an alert
    Given Alice has £10,000.00
    When Alice pays £6,000.00 to Carol at 20-00-00 12345678
    Then a suspicious-transaction alert is raised for that payment
    And the alert gives the reason "large amount"

  Scenario: Three payments within a minute raise a velocity alert
    Given Alice has £100.00
    When Alice pays £1.00 to Carol at 20-00-00 12345678 3 times
    Then a suspicious-transaction alert is raised for Alice's account with the reason "velocity"

  Scenario: A large first payment to a new payee raises an alert
    Given Alice has £5,000.00
    When Alice pays £1,500.00 to Carol at 20-00-00 12345678
    Then a suspicious-transaction alert is raised for that payment
    And the alert gives the reason "new payee"

  Scenario: The screening vendor scores a payee high
    Given Alice has £100.00
    When Alice pays £20.00 to Sanctioned at 20-00-00 12345678
    Then a suspicious-transaction alert is raised for that payment
    And the alert gives the reason "screening vendor scored"

  Scenario: An ordinary payment raises no alert
    Given Alice has £100.00
    When Alice pays £5.00 to Carol at 20-00-00 12345678
    Then the payment is completed
    And the payment is screened without an alert

  Scenario: The vendor is down, then recovers: no payment goes unscreened
    Given Alice has £10,000.00
    And the screening vendor is unavailable for Alice's account
    When Alice pays £6,000.00 to Carol at 20-00-00 12345678
    Then the payment is completed
    And no alert is raised for that payment while the vendor is down
    When the screening vendor recovers for Alice's account
    Then a suspicious-transaction alert is raised for that payment

  Scenario: An analyst closes an alert
    Given Alice has £10,000.00
    When Alice pays £6,000.00 to Carol at 20-00-00 12345678
    Then a suspicious-transaction alert is raised for that payment
    When the analyst closes the alert as "false_positive"
    Then the alert is closed with outcome "false_positive"
    And closing the alert again is refused with `alert-closed`

  Scenario: A large top-up raises an alert
    Given Alice has £10.00
    When Alice tops up £6,000.00 with their card
    Then the top-up succeeds
    And a suspicious-transaction alert is raised for that top-up
