@discovery
Feature: Discovering the bank by following its links
  Every resource is HAL: it links to itself and to its service's discovery
  resource, and to what it relates to, by full URL. A client needs one address,
  the gateway's, and finds the rest by following links.

  Scenario: Every service is reachable from the front door
    When I open the bank's front door
    Then it links to the `accounts`, `payments`, `topups` and `monitoring` services
    And every link from it leads to a resource that links back to discovery

  Scenario Outline: Each service's discovery resource
    When I open the bank's front door
    And I follow the `<service>` link
    Then the resource has `self` and `discovery` links
    And the resource has `<collection>` and `events` links

    Examples:
      | service    | collection |
      | accounts   | customers  |
      | payments   | payments   |
      | topups     | topups     |
      | monitoring | alerts     |

  Scenario: From an account to its customer and back
    Given Alice has £10.00
    When I open Alice's account
    And I follow the `customer` link
    And I follow the `accounts` link
    Then the resource lists Alice's account

  Scenario: A payment links to the account it was paid from
    Given Alice has £10.00
    When Alice pays £1.00 to Carol at 20-00-00 12345678
    And I open the payment
    And I follow the `debtor-account` link
    Then the resource is Alice's account
