@payments
Feature: Domestic payments
  Alice pays by Faster Payments. The bank holds the money, sends the payment to
  the scheme, and settles it when the scheme calls back: captured when settled,
  released when rejected. Money from other banks arrives the same way.

  Background:
    Given Alice has £100.00
    And Bob has £20.00

  Scenario: A payment to another bank settles
    When Alice pays £25.00 to Carol at 20-00-00 12345678
    Then the payment is completed
    And Alice's balance is £75.00
    And Alice has nothing on hold
    And a `payment.completed` event for that payment is published

  Scenario: A payment between two customers of the bank
    When Alice pays £25.00 to Bob
    Then the payment is completed
    And Alice's balance is £75.00
    And Bob's balance is £45.00

  Scenario: A payment larger than the balance is refused
    When Alice pays £150.00 to Bob
    Then the payment is refused for insufficient funds
    And Alice's balance is £100.00
    And Bob's balance is £20.00

  Scenario Outline: The scheme rejects a payment and gives its reason
    When Alice pays £10.00 to Carol at 20-00-00 <account number>
    Then the payment fails with reason <reason>
    And Alice's balance is £100.00
    And Alice has nothing on hold
    And a `payment.failed` event for that payment is published

    Examples:
      | account number | reason |
      | 99999901       | AC01   |
      | 99999902       | AC04   |
      | 99999903       | AG01   |

  Scenario: The scheme is unavailable, then recovers
    Given the payment scheme is unavailable for Alice's payments
    When Alice pays £10.00 to Carol at 20-00-00 12345678
    Then the payment is waiting for the scheme
    And Alice has £10.00 on hold
    And Alice's available balance is £90.00
    When the payment scheme recovers for Alice's payments
    Then the payment is completed
    And Alice's balance is £90.00

  Scenario: A settled payment whose webhook was lost is reconciled with the scheme
    Given Alice has £100.00
    And the payment scheme loses its webhooks for Alice's payments
    When Alice pays £10.00 to Carol at 20-00-00 12345678
    Then the payment is completed
    And Alice's balance is £90.00
    And the payments service asked the scheme what became of that payment

  Scenario: The scheme times out once; the retry settles the payment once
    Given the payment scheme times out once for Alice's payments
    When Alice pays £10.00 to Carol at 20-00-00 12345678
    Then the payment is completed
    And Alice's balance is £90.00
    And the payment scheme settled that payment once

  Scenario: A retried request makes one payment
    When Alice pays £10.00 to Carol at 20-00-00 12345678 with idempotency key "rent-november"
    And Alice sends that payment request again
    Then both answers are the same payment
    And the second answer is marked as a replay
    And the payment is completed
    And Alice's balance is £90.00

  Scenario: The same idempotency key for a different payment is refused
    When Alice pays £10.00 to Carol at 20-00-00 12345678 with idempotency key "rent-november"
    And Alice pays £20.00 to Carol at 20-00-00 12345678 with the same idempotency key
    Then the request is refused with `idempotency-key-reused`
    And Alice's balance is £90.00

  Scenario: Money from another bank is credited
    When Dave at another bank sends £30.00 to Bob
    Then Bob's balance is £50.00
    And a `payment.received` event for Bob's account is published

  Scenario: Money sent to an account nobody has goes back
    When Dave at another bank sends £30.00 to account 04-00-04 00000042
    Then the payment scheme receives a return for it with reason AC01
    And a `payment.returned` event for it is published
    And Bob's balance is £20.00

  Scenario: A slow payment scheme slows its own payments, not the bank
    Given the payment scheme takes 3 seconds to answer Alice's payments
    When Alice pays £1.00 to Carol at 20-00-00 12345678 5 times
    Then the payments service stays healthy and answers at once
    And every payment is completed
    And Alice's balance is £95.00

  Scenario: An unsigned webhook moves no money
    When an unsigned inbound payment of £7,777.77 for Alice is posted straight to the payments service
    Then the payments service refuses it with 401
    When an unsigned inbound payment of £7,777.77 for Alice is posted through the gateway's proxy
    Then the gateway refuses it with 404
    And Alice's balance is £100.00
