"""The names the README gives for decoding in Python import as written."""


def test_engine_and_sampling_params_import_from_the_package():
    from buildlm.infer import Engine, SamplingParams, generate
    from buildlm.infer.engine import Engine as EngineFromItsFile

    assert Engine is EngineFromItsFile
    assert SamplingParams(max_new_tokens=3).max_new_tokens == 3
    assert callable(generate)


def test_buildlm_load_is_there_without_importing_torch_first():
    import buildlm

    assert callable(buildlm.load)
