-- The hold's capture and release links, kept from the answer that placed it,
-- so that settling a payment's hold is one call to the accounts service, not a
-- read of the hold and then the call. Payments made before have none: their
-- hold is read first, as before.
ALTER TABLE payments ADD COLUMN hold_capture TEXT, ADD COLUMN hold_release TEXT;
