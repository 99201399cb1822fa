-- The sequencer (kit/events.rs) in one round trip: readers call
-- `position_events(batch)` as a statement of its own, instead of a check, a
-- transaction, a lock and an update (five round trips on every poll). Each
-- statement of a PL/pgSQL function takes a fresh snapshot under READ COMMITTED,
-- so the update, taken after the lock, sees every position the previous holder
-- committed: positions become visible in increasing order, as before. Returns
-- the newest position (the head readers report their lag from).
CREATE FUNCTION position_events(batch BIGINT) RETURNS BIGINT LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM events WHERE position IS NULL) THEN
        -- One run at a time, held to the end of the caller's transaction
        -- (the statement's own, for a reader in autocommit).
        PERFORM pg_advisory_xact_lock(111559182283891);  -- 0x6576656e7473, "events"
        -- nextval after the sort (a volatile select list is evaluated after
        -- ORDER BY and LIMIT), so positions follow `seq`.
        WITH next AS (
            SELECT seq, nextval('events_position_seq') AS position
            FROM events WHERE position IS NULL ORDER BY seq LIMIT batch
        )
        UPDATE events SET position = next.position FROM next WHERE events.seq = next.seq;
    END IF;
    RETURN (SELECT coalesce(max(position), 0) FROM events);
END
$$;
