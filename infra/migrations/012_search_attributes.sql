-- Search attributes (issue 14, item 3; domain/search_attributes.py): what an execution is found by
-- with `attr.<name>` in the executions filter language.
-- rm_executions.search_attributes: the execution's attributes as recorded in ExecutionStarted
--   ({name: value}; NULL for executions started before them), shown in list items and reads.
-- rm_execution_attributes: one row per attribute, its value in the column of its type (the others
--   NULL), indexed per type for equality and range filters within a workspace. Written by the
--   projector with the execution's row; disposable like every read model.
ALTER TABLE rm_executions ADD COLUMN search_attributes jsonb;

CREATE TABLE rm_execution_attributes (
    execution_id uuid NOT NULL,
    name         text NOT NULL,
    workspace_id uuid NOT NULL,
    text_value   text,
    num_value    numeric,
    time_value   timestamptz,
    bool_value   boolean,
    PRIMARY KEY (execution_id, name)
);
CREATE INDEX rm_execution_attributes_text
    ON rm_execution_attributes (workspace_id, name, text_value) WHERE text_value IS NOT NULL;
CREATE INDEX rm_execution_attributes_num
    ON rm_execution_attributes (workspace_id, name, num_value) WHERE num_value IS NOT NULL;
CREATE INDEX rm_execution_attributes_time
    ON rm_execution_attributes (workspace_id, name, time_value) WHERE time_value IS NOT NULL;
CREATE INDEX rm_execution_attributes_bool
    ON rm_execution_attributes (workspace_id, name, bool_value) WHERE bool_value IS NOT NULL;
