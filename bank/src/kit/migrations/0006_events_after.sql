-- A reader's poll in one round trip: the sequencer (`position_events`), then
-- the page after the reader's cursor, read by a statement of its own (a fresh
-- snapshot under READ COMMITTED, so it sees the positions just given). Every
-- row carries the head; an empty page is one row with the head alone.
CREATE FUNCTION events_after(after BIGINT, page BIGINT, batch BIGINT)
RETURNS TABLE (head BIGINT, event_position BIGINT, event_id UUID, event_type TEXT, event_aggregate_id TEXT,
               event_occurred_at TIMESTAMPTZ, event_trace_id TEXT, event_data JSONB)
LANGUAGE plpgsql AS $$
DECLARE
    newest BIGINT := position_events(batch);
BEGIN
    RETURN QUERY
        SELECT newest, e.position, e.id, e.type, e.aggregate_id, e.occurred_at, e.trace_id, e.data
        FROM events e WHERE e.position > after ORDER BY e.position LIMIT page;
    IF NOT FOUND THEN
        RETURN QUERY SELECT newest, NULL::BIGINT, NULL::UUID, NULL::TEXT, NULL::TEXT, NULL::TIMESTAMPTZ, NULL::TEXT,
                            NULL::JSONB;
    END IF;
END
$$;
