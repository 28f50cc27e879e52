-- Who caused each event, and in which request (issue 15): metadata beside the event, written with
-- it by the append and never changed after; the aggregate's state (the event itself) is untouched.
--   actor      {"type": "user"|"api_key", "id"}, {"type": "webhook"|"schedule", "workflow_id"} or
--              {"type": "system"}; NULL (events recorded before this column) reads as system;
--   request_id the HTTP request's X-Request-Id, when a request caused the event.
ALTER TABLE linkflow_events
    ADD COLUMN actor jsonb,
    ADD COLUMN request_id text;
