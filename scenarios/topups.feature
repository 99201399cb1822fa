@topups
Feature: Card top-ups
  Alice adds money from her debit card. The card acquirer charges the card and
  confirms by webhook; the bank credits the account once, whatever the
  acquirer repeats.

  Background:
    Given Alice has £10.00

  Scenario: A top-up succeeds
    When Alice tops up £50.00 with their card
    Then the top-up succeeds
    And Alice's balance is £60.00
    And a `topup.succeeded` event for that top-up is published

  Scenario Outline: A declined card adds nothing
    When Alice tops up £50.00 with card <card>
    Then the top-up fails with reason <reason>
    And Alice's balance is £10.00

    Examples:
      | card                   | reason             |
      | tok_declined           | do_not_honour      |
      | tok_insufficient_funds | insufficient_funds |
      | tok_expired            | expired_card       |

  Scenario: A webhook delivered twice credits once
    When Alice tops up £50.00 with their card
    Then the top-up succeeds
    When the card acquirer delivers that top-up's webhook again
    Then Alice's balance is £60.00
    And Alice's statement shows 1 credit of £50.00

  Scenario: The acquirer is unavailable, then recovers
    Given the card acquirer is unavailable for Alice's card
    When Alice tops up £20.00 with their card
    Then the top-up is waiting for the card acquirer
    And Alice's balance is £10.00
    When the card acquirer recovers for Alice's card
    Then the top-up succeeds
    And Alice's balance is £30.00

  Scenario: A webhook with a bad signature is refused
    When Alice tops up £50.00 with their card
    Then the top-up succeeds
    When a webhook from the card acquirer arrives with a bad signature
    Then the gateway refuses it with 401
    And Alice's balance is £60.00

  Scenario: A slow card acquirer slows its own top-ups, not the bank
    Given the card acquirer takes 3 seconds to answer for Alice's card
    When Alice tops up £50.00 with their card
    Then the topups service stays healthy and answers at once
    And the top-up succeeds
    And Alice's balance is £60.00
