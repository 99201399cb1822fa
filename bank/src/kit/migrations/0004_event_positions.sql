-- An event's position, the cursor readers page by (`GET /events?after=`), is
-- given once the event is committed, by a sequencer the readers run
-- (kit/events.rs), so that writers never wait for each other to append. `seq`
-- stays the order events were written in; positions follow it.
ALTER TABLE events ADD COLUMN position BIGINT;
UPDATE events SET position = seq;
CREATE UNIQUE INDEX events_position ON events (position);
CREATE INDEX events_unpositioned ON events (seq) WHERE position IS NULL;
CREATE SEQUENCE events_position_seq;
-- Positions already handed out (readers keep cursors) are never given again.
SELECT setval('events_position_seq', max(seq)) FROM events HAVING max(seq) IS NOT NULL;
