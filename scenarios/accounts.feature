@accounts
Feature: Accounts and balances
  A customer opens a GBP current account at sort code 04-00-04. Money put into
  it shows in the balance and, line by line, on the statement.

  Scenario: A new account starts empty
    Given Alice is a customer
    When Alice opens an account
    Then Alice's balance is £0.00
    And Alice's account has sort code 04-00-04 and an eight-digit account number

  Scenario: A deposit shows in the balance and on the statement
    Given Alice has an account
    When £100.00 is deposited into Alice's account
    Then Alice's balance is £100.00
    And Alice's available balance is £100.00
    And Alice's statement shows 1 credit of £100.00

  Scenario Outline: Deposits add up to the penny
    Given Alice has <first>
    When <second> is deposited into Alice's account
    Then Alice's balance is <total>

    Examples:
      | first       | second | total         |
      | £0.00       | £0.01  | £0.01         |
      | £10.50      | £89.50 | £100.00       |
      | £999,999.99 | £0.01  | £1,000,000.00 |

  Scenario: Only GBP accounts are opened
    Given Alice is a customer
    When Alice asks for an account in EUR
    Then the request is refused with `unsupported-currency`
    And Alice has no accounts

  Scenario: A deposit of nothing is refused and changes nothing
    Given Alice has £10.00
    When £0.00 is deposited into Alice's account
    Then the request is refused with `invalid-amount`
    And Alice's balance is £10.00
