-- What a finished job produced (an install's or rollout's report, per member), beside its log and error.

-- +goose Up
ALTER TABLE jobs ADD COLUMN result jsonb;

-- +goose Down
ALTER TABLE jobs DROP COLUMN result;
