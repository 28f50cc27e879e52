-- The webhook token of each workflow (its hook is shown while its trigger is a webhook).
ALTER TABLE rm_workflows ADD COLUMN webhook_token text;
