"""Tiny models for tests: a Llama-shaped causal LM and a BERT-shaped classifier built from a config,
with a byte-level BPE tokenizer trained on the fly. Real transformers models, about 100k parameters."""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "Extract the city and the country from the text. Answer with JSON only.",
    "Last spring I flew to Paris for a week and loved the food.",
    '{"city": "Paris", "country": "France"}', '{"city": "Tokyo", "country": "Japan"}',
    "The quick brown fox jumps over the lazy dog.", "positive negative neutral review great awful",
    "What is the capital of France? The capital of France is Paris.",
    "Berlin Germany Madrid Spain Rome Italy Lisbon Portugal Vienna Austria Oslo Norway",
] * 20


def train_tokenizer(folder: Path, vocab_size: int = 400, chat: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>", "[CLS]", "[SEP]"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<pad>", unk_token="<|endoftext|>", cls_token="[CLS]",
                                   sep_token="[SEP]")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def build_causal_lm(folder: Path, hidden: int = 64, layers: int = 2) -> Path:
    """A tiny LlamaForCausalLM saved with save_pretrained, plus its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(folder)
    # initializer_range 0.25, not 0.02: with tiny random weights a frozen embedding keeps every logit near
    # zero, so PEFT techniques (which leave it frozen) could not lower the loss at all
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=tok.pad_token_id, initializer_range=0.25,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def build_classifier(folder: Path, hidden: int = 64, layers: int = 2) -> Path:
    """A tiny BertForSequenceClassification-shaped encoder (the classifier head is made at load time)."""
    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(folder, chat=False)
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                        num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=512,
                        pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def write_alpaca(path: Path, n: int = 64) -> Path:
    cities = [("Paris", "France"), ("Tokyo", "Japan"), ("Berlin", "Germany"), ("Madrid", "Spain"),
              ("Rome", "Italy"), ("Oslo", "Norway"), ("Vienna", "Austria"), ("Lisbon", "Portugal")]
    rows = []
    for i in range(n):
        city, country = cities[i % len(cities)]
        rows.append({"instruction": "Extract the city and the country from the text. Answer with JSON only.",
                     "input": f"Last spring I flew to {city} for a week.",
                     "output": json.dumps({"city": city, "country": country})})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
