-- Whether an engine here can serve a model's file (issue 17), judged from its GGUF header at
-- upload and recorded by ModelServabilityAssessed: the assessment as JSON
-- ({"status":"servable",…} | {"status":"not_servable","reason":{"code":…}}). NULL for models
-- recorded before uploads were assessed.
ALTER TABLE models_view ADD COLUMN servability text;
