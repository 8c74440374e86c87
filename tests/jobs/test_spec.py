"""The job spec: parsing YAML and command lines, and one test per error (each names its dotted key)."""

from pathlib import Path

import pytest

from vipr.errors import ConfigError
from vipr.jobs.inputs import check_inputs
from vipr.jobs.spec import (Input, check_arguments, default_name, load_spec, parse_duration, parse_spec, resumable,
                            spec_from_command)

SPECS = Path(__file__).parent / "specs"
PRETRAIN = ["vipr", "pretrain", "--data", "builtin:shapes"]


def spec(**keys):
    return parse_spec({"name": "job-a", "command": PRETRAIN, **keys})


def test_a_spec_file_reads_into_typed_sections():
    two = load_spec(SPECS / "two_node.yaml")
    assert (two.name, two.queue, two.priority_class) == ("pretrain-2x2", "team-a", "research-high")
    assert two.timeout == 12 * 3600
    assert (two.resources.nodes, two.resources.processes_per_node, two.resources.cpu) == (2, 2, 3.5)
    assert two.inputs == (Input("dataset", "/data/photos", "/data/photos"),)
    assert two.outputs.register.name == "r18-photos" and two.outputs.register.alias == "candidate"
    assert two.retry.on == ("failed", "evicted", "timeout") and two.env == {"VIPR_CACHE": "/workspace/cache"}
    assert two.command[-2:] == ("--out", "runs/pretrain-2x2")  # its own --out, kept once


def test_defaults_and_the_run_folder_joins_the_command():
    job = spec()
    assert (job.queue, job.priority, job.timeout) == ("default", 0, None)
    assert (job.retry.max_retries, job.retry.on) == (2, ("evicted",))
    assert job.outputs.run_dir == "runs/job-a" and job.command == (*PRETRAIN, "--out", "runs/job-a")
    assert spec(outputs={"run_dir": "runs/x"}).command[-2:] == ("--out", "runs/x")
    assert parse_spec({"name": "b", "command": [*PRETRAIN, "--out=runs/y"]}).outputs.run_dir == "runs/y"


def test_a_command_line_becomes_a_spec_with_overrides():
    job = spec_from_command(["vipr", "nas", "search", "--epochs", "2"], overrides=["resources.nodes=2", "queue=team-b"])
    assert job.name.startswith("nas-search-") and job.resources.nodes == 2 and job.queue == "team-b"
    assert spec_from_command(PRETRAIN, name="mine").name == "mine"
    assert default_name(["vipr", "eval", "knn"]).startswith("eval-knn-")


def test_values_are_coerced_as_yaml_writes_them():
    job = spec(env={"FLAG": True, "N": 3}, command=["vipr", "pretrain", "--epochs", 100], resources={"cpu": 2})
    assert job.env == {"FLAG": "true", "N": "3"} and "100" in job.command and job.resources.cpu == 2.0


@pytest.mark.parametrize("value, seconds", [(90, 90), ("7200", 7200), ("2h", 7200), ("30m", 1800), ("1h30m", 5400),
                                            ("45s", 45), (0.5, 1)])
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("keys, message", [
    ({"resourcs": {}}, "unknown config key 'resourcs' (did you mean 'resources'?)"),
    ({"resources": {"memroy": "8Gi"}}, "unknown config key 'resources.memroy' (did you mean 'resources.memory'?)"),
    ({"inputs": [{"kind": "dataset", "refs": "x"}]},
     "unknown config key 'inputs[0].refs' (did you mean 'inputs[0].ref'?)"),
    ({"outputs": {"register": {"nme": "m"}}}, "unknown config key 'outputs.register.nme' (did you mean "
                                              "'outputs.register.name'?)"),
    ({"name": "Pretrain_1"}, "'name' must be a DNS-1123 label"),
    ({"name": "a" * 64}, "'name' must be a DNS-1123 label"),
    ({"name": "-a"}, "'name' must be a DNS-1123 label"),
    ({"resources": {"cpu": 0}}, "'resources.cpu' must be a number in (0, 1024], got 0.0"),
    ({"resources": {"nodes": 0}}, "'resources.nodes' must be an integer in [1, 4096], got 0"),
    ({"resources": {"processes_per_node": 0}}, "'resources.processes_per_node' must be an integer in [1, 1024]"),
    ({"resources": {"gpu": -1}}, "'resources.gpu' must be an integer in [0, 64], got -1"),
    ({"resources": {"memory": "8m"}}, "'resources.memory' must be a memory quantity of at least 1Mi"),
    ({"resources": {"memory": 8}}, "'resources.memory' must be a memory quantity of at least 1Mi, such as 512Mi"),
    ({"resources": {"memory": "8 GB"}}, "'resources.memory' must be a memory quantity"),
    ({"resources": {"memory": "eight"}}, "'resources.memory' must be a memory quantity"),
    ({"queue": "Team_A"}, "'queue' must be a DNS-1123 subdomain"),
    ({"priority_class": "High"}, "'priority_class' must be a DNS-1123 subdomain"),
    ({"priority": "high"}, "'priority' must be an integer"),
    ({"retry": {"on": ["crash"]}}, "'retry.on' must be one of failed, evicted, timeout (each item)"),
    ({"retry": {"max_retries": -1}}, "'retry.max_retries' must be an integer in [0, 100], got -1"),
    ({"timeout": "2 hours"}, "'timeout' must be seconds or a duration such as 2h, 30m or 1h30m, got '2 hours'"),
    ({"timeout": 0}, "'timeout' must be > 0 seconds, got 0"),
    ({"env": {"1BAD": "x"}}, "'env' name '1BAD' is not a variable name"),
    ({"env": {"A": None}}, "'env.A' must be a string, got None"),
    ({"env": ["A=1"]}, "'env' must be a mapping of NAME: value"),
    ({"inputs": {"kind": "dataset"}}, "'inputs' must be a list of {kind, ref, mount} entries"),
    ({"inputs": [{"kind": "data", "ref": "x"}]},
     "'inputs[0].kind' must be one of dataset, checkpoint, model, got 'data'"),
    ({"inputs": [{"kind": "dataset"}]}, "'inputs[0].ref' is missing"),
    ({"inputs": [{"ref": "x", "mount": "data/x"}]}, "'inputs[0].mount' must be an absolute path"),
    ({"outputs": {"register": {"name": "my model"}}}, "'outputs.register.name' must be a model name"),
    ({"outputs": {"run_dir": "runs/a"}, "command": [*PRETRAIN, "--out", "runs/b"]},
     "outputs.run_dir 'runs/a' and the command's --out 'runs/b' differ; give one of them"),
    ({"volumes": {"data_pvc": "Data"}}, "'volumes.data_pvc' must be a DNS-1123 subdomain"),
    ({"volumes": {"dat_pvc": "d"}}, "unknown config key 'volumes.dat_pvc' (did you mean 'volumes.data_pvc'?)"),
])
def test_every_bad_key_or_value_names_its_key(keys, message):
    with pytest.raises(ConfigError) as err:
        spec(**keys)
    assert message in str(err.value)


@pytest.mark.parametrize("command", [["vipr", "serve", "--model", "m"], ["python", "train.py"], ["vipr"],
                                     ["vipr", "nas", "export"], ["vipr", "transfer", "predict"], ["vipr", "eval"],
                                     ["pretrain", "--epochs", "3"]])
def test_a_command_that_is_no_training_or_eval_names_the_allowed_ones(command):
    with pytest.raises(ConfigError, match="must be a vipr training or evaluation command "
                                          r"\(vipr pretrain, vipr nas search\|train, vipr distill, "):
        spec(command=command)


def test_command_errors_a_job_would_hit_late():
    with pytest.raises(ConfigError, match="'command' must be a list"):
        spec(command="vipr pretrain")
    with pytest.raises(ConfigError, match="set resources.processes_per_node instead"):
        spec(command=[*PRETRAIN, "--nproc-per-node", "4"])
    with pytest.raises(ConfigError, match="has no 'command'"):
        parse_spec({"name": "a"})
    with pytest.raises(ConfigError, match="has no 'name'"):
        parse_spec({"command": PRETRAIN})


def test_the_command_is_parsed_by_vipr_itself():
    check_arguments((*PRETRAIN, "--epochs", "3"))
    with pytest.raises(ConfigError) as err:
        check_arguments((*PRETRAIN, "--epoch", "3"))
    assert str(err.value) == ("'command' does not parse: vipr pretrain: unrecognized argument: --epoch "
                              "(did you mean --epochs?)")


def test_a_spec_file_error_names_the_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: a\ncommand: [vipr, pretrain]\nresources: {cpu: 0}\n")
    with pytest.raises(ConfigError, match=r"^job spec .*job\.yaml: 'resources.cpu' must be a number in \(0, 1024\]"):
        load_spec(path)


def test_resumable_commands():
    assert resumable(spec()) and resumable(spec(command=["vipr", "transfer", "detect"]))
    assert resumable(spec(command=["vipr", "distill"]))
    assert not resumable(spec(command=["vipr", "eval", "knn"])) and not resumable(spec(command=[*PRETRAIN, "--resume"]))


def test_inputs_are_resolved_by_the_default_resolver(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"")
    check_inputs(spec(inputs=[{"kind": "dataset", "ref": "builtin:shapes"}, {"kind": "dataset", "ref": str(tmp_path)},
                              {"kind": "checkpoint", "ref": str(tmp_path / "ckpt.pt")},
                              {"kind": "model", "ref": "r18@champion"},
                              {"kind": "dataset", "ref": "/not/here", "mount": "/data/here"}]))  # on a job volume
    for item, message in (({"kind": "dataset", "ref": "/not/here"}, "inputs[0] (dataset '/not/here'): '/not/here' is "
                                                                    "neither a builtin: source nor an existing path"),
                          ({"kind": "checkpoint", "ref": "runs/none"}, "'runs/none' is no file or folder"),
                          ({"kind": "model", "ref": "my model"}, "a model ref is NAME, NAME@ALIAS or NAME/VERSION")):
        with pytest.raises(ConfigError) as err:
            check_inputs(spec(inputs=[item]))
        assert message in str(err.value)


def test_a_resolver_plugs_in():
    def versions(item):
        if item.ref != "photos@v2":
            raise ConfigError(f"no dataset version {item.ref}")

    check_inputs(spec(inputs=[{"kind": "dataset", "ref": "photos@v2"}]), versions)
    with pytest.raises(ConfigError, match=r"inputs\[0\] \(dataset 'photos@v9'\): no dataset version photos@v9"):
        check_inputs(spec(inputs=[{"kind": "dataset", "ref": "photos@v9"}]), versions)
