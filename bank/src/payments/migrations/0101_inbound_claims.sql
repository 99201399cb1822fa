-- An inbound payment is claimed ('receiving') before the account is credited
-- or the money returned, so no transaction is held across those calls.
ALTER TABLE inbound_payments DROP CONSTRAINT inbound_payments_status_check;
ALTER TABLE inbound_payments ADD CONSTRAINT inbound_payments_status_check
    CHECK (status IN ('receiving', 'credited', 'returned'));
