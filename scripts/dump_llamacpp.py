#!/usr/bin/env python3
"""Dump llorch reference tensors from llama.cpp: an independent peer of HF transformers.

llama.cpp implements GPT-2 with code no one here wrote: its own converter (HF -> GGUF), its own
graph (src/models/gpt2.cpp), its own CPU kernels (ggml) and its own BPE tokenizer. This script
converts the HF model directory with llama.cpp's converter to an F32 GGUF, runs it on the CPU
through llama-cpp-python's C API (F32 KV cache, flash attention off so that the attention
probabilities exist as a tensor), reads the intermediate tensors in ggml's evaluation callback
and writes them in llorch's reference format (manifest + .npy, CHECKPOINTS.md). Token ids come
from llama.cpp's tokenizer, the token after the prompt and the greedy generation from its greedy
sampler, the generated text from its detokenizer. Nothing here comes from llorch's Rust code or
from HF's model code.

Needs the llama.cpp venv: `source scripts/venv.sh --with-llamacpp` (sets $PYTHON and
$LLAMACPP_SRC, the unpacked llama-cpp-python release holding the converter).

    $PYTHON scripts/dump_llamacpp.py --model DIR --prompt "Hello." --out DIR/reference-llamacpp
    $PYTHON scripts/dump_llamacpp.py --model DIR --cases cases.json --out OUT
    $PYTHON scripts/dump_llamacpp.py --model DIR --cases cases.json --outtype q8_0 --out OUT

With --outtype bf16|f16|q8_0 the converter writes the GGUF in that type (it keeps norms, biases
and position embeddings F32), and before anything runs this script checks that the GGUF's
matrices, dequantized by gguf-py, are bit for bit the model's weights as scripts/rounding.py
rounds them (what `dump_reference.py --weights-as` and `llorch --weights` use); the manifest
records `weights_as`. llama.cpp then computes its own way: its BF16, F16 and Q8_0 products
round the activations to the weights' type (Q8_0 × Q8_0 blocks for Q8_0), which PyTorch's and
llorch's do not.

How llama.cpp's tensors map to the checkpoints (ggml names are `name-LAYER`):

    cp 0  embeddings         inpL                      token + position embeddings
    cp 1  ln_1               attn_norm-L
    cp 2  q, k, v            wqkv_b-L                  c_attn with bias, split in thirds as
                                                       llama.cpp's own views split it
    cp 3  k_cache, v_cache   the KV cache views that kq-L and kqv-L read (cache cells 0..n)
    cp 4  scores             kq-L x scale + KQ mask    ggml fuses scale and mask into
                                                       soft_max_ext; both are its own (the
                                                       node's scale, its mask input), applied here
    cp 4  attn_probs         kq_soft_max-L
    cp 5  attn_out           the ADD of blk.L.attn_output.bias (c_proj with bias; unnamed)
    cp 6  ln_2, gelu, mlp_out  ffn_norm-L, ffn_gelu-L, ffn_out-L
    cp 7  block_out          l_out-L
    cp 8  ln_f, logits       result_norm, result_output
    cp 9  selected_logits    the last row of result_output
    cp 10 next_token         llama.cpp's greedy sampler after the prompt
    cp 11 probs              left out: llama.cpp's samplers run outside the graph and apply
                             their filters in another order than HF's warpers
    cp 12 generated_ids/text llama.cpp's greedy sampler and detokenizer
"""

import contextlib
import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from dump_format import (FORMAT, add_corpus_arguments, case_entry, case_token_ids, check_model_dir, corpus_case,
                         corpus_windows, dump_parser, read_cases, write_manifest, write_tensors)

try:
    import llama_cpp
    from llama_cpp import llama_cpp as llama
except ImportError:
    sys.exit("error: llama-cpp-python is not installed here: `source scripts/venv.sh --with-llamacpp` and run "
             "this script with $PYTHON")

GGML_TYPE_F32 = 0
OMITTED = [{
    "phase": "prefill",
    "checkpoint": 11,
    "name": "probs",
    "reason": "llama.cpp's samplers run outside its graph and filter in another order than HF's warpers "
              "(top-k and top-p before the temperature), so it has no tensor for checkpoint 11",
}]


class GgmlTensor(ctypes.Structure):
    """`struct ggml_tensor` of ggml.h in the pinned llama.cpp (checked against ggml at run time)."""
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.POINTER(ctypes.c_char) * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def load_ggml():
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    candidates = sorted(lib_dir.glob("libggml-base.*")) + sorted(lib_dir.glob("libggml.*"))
    if not candidates:
        sys.exit(f"error: no libggml-base in {lib_dir}")
    ggml = ctypes.CDLL(str(candidates[0]))
    ggml.ggml_get_name.argtypes = [ctypes.c_void_p]
    ggml.ggml_get_name.restype = ctypes.c_void_p
    ggml.ggml_nbytes.argtypes = [ctypes.c_void_p]
    ggml.ggml_nbytes.restype = ctypes.c_size_t
    ggml.ggml_op_desc.argtypes = [ctypes.c_void_p]
    ggml.ggml_op_desc.restype = ctypes.c_char_p
    ggml.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    ggml.ggml_backend_tensor_get.restype = None
    return ggml


GGML = load_ggml()


def tensor_at(address):
    """The ggml_tensor at `address`, with its layout checked against ggml's own accessors."""
    t = GgmlTensor.from_address(address)
    if GGML.ggml_get_name(address) != address + GgmlTensor.name.offset:
        sys.exit("error: struct ggml_tensor of this llama.cpp differs from the one this script mirrors")
    return t


def read(address):
    """The float32 values of a (possibly strided) ggml tensor as a numpy array of shape ne
    reversed, the numpy order: ggml's ne[0] is the fastest-moving axis."""
    t = tensor_at(address)
    if t.type != GGML_TYPE_F32:
        raise RuntimeError(f"{t.name.decode()} has ggml type {t.type}, not F32")
    nbytes = GGML.ggml_nbytes(address)
    raw = np.empty(nbytes, dtype=np.uint8)
    GGML.ggml_backend_tensor_get(address, raw.ctypes.data, 0, nbytes)
    view = np.lib.stride_tricks.as_strided(raw.view(np.float32), shape=tuple(reversed(t.ne)),
                                           strides=tuple(reversed(t.nb)))
    return view.copy()


def src_name(t, i):
    p = t.src[i]
    if not p:
        return None
    return ctypes.string_at(GGML.ggml_get_name(ctypes.cast(p, ctypes.c_void_p).value)).decode()


def src_address(t, i):
    return ctypes.cast(t.src[i], ctypes.c_void_p).value


class Capture:
    """ggml's evaluation callback: asks for the nodes that hold a checkpoint and copies them out
    as they are computed. Keys are (checkpoint, layer, name) in llorch's terms; values are numpy
    arrays in ggml's order (ne reversed). Exceptions are kept, not raised into C."""

    def __init__(self, n_layer):
        self.active = False
        self.got = {}
        self.error = None
        names = {"inpL": (0, None, "embeddings"), "result_norm": (8, None, "ln_f"),
                 "result_output": (8, None, "logits")}
        for layer in range(n_layer):
            names.update({
                f"attn_norm-{layer}": (1, layer, "ln_1"),
                f"wqkv_b-{layer}": (2, layer, "qkv"),
                f"kq-{layer}": (4, layer, "kq"),
                f"kq_soft_max-{layer}": (4, layer, "attn_probs"),
                f"kqv-{layer}": (4, layer, "kqv"),
                f"ffn_norm-{layer}": (6, layer, "ln_2"),
                f"ffn_gelu-{layer}": (6, layer, "gelu"),
                f"ffn_out-{layer}": (6, layer, "mlp_out"),
                f"l_out-{layer}": (7, layer, "block_out"),
            })
        self.names = names
        self.attn_bias = {f"blk.{layer}.attn_output.bias": layer for layer in range(n_layer)}
        self.callback = llama.ggml_backend_sched_eval_callback(self._callback)

    def key(self, address):
        t = tensor_at(address)
        name = t.name.decode()
        if name in self.names:
            return self.names[name]
        # c_proj's output has no name of its own: it is the ADD of attn_output.bias.
        if GGML.ggml_op_desc(address) == b"ADD" and src_name(t, 1) in self.attn_bias:
            return (5, self.attn_bias[src_name(t, 1)], "attn_out")
        return None

    def _callback(self, address, ask, _user_data):
        if not self.active or self.error is not None:
            return not ask
        try:
            key = self.key(address)
            if ask:
                return key is not None
            if key in self.got:
                raise RuntimeError(f"{key} seen twice in one pass")
            self.got[key] = read(address)
            t = tensor_at(address)
            # The KV cache as attention reads it: kq = K·Q reads the K cache view, kqv = V·P the
            # V cache view (persistent memory, so its contents are final here).
            if key[2] == "kq":
                self.got[(3, key[1], "k_cache_view")] = read(src_address(t, 0))
            if key[2] == "kqv":
                self.got[(3, key[1], "v_cache_view")] = read(src_address(t, 0))
            # soft_max_ext(kq, mask, scale) adds llama.cpp's own mask (-inf on future keys).
            if key[2] == "attn_probs":
                self.got[(4, key[1], "kq_mask")] = read(src_address(t, 1))
                # ggml_soft_max_ext keeps its scale as the first float of op_params.
                scale = ctypes.c_float.from_buffer_copy(ctypes.c_int32(t.op_params[0])).value
                self.got[(4, key[1], "kq_scale")] = np.float32(scale)
        except Exception as e:  # noqa: BLE001 - raised again after llama_decode returns
            self.error = e
        return True

    @contextlib.contextmanager
    def recording(self):
        self.got, self.error, self.active = {}, None, True
        try:
            yield
        finally:
            self.active = False
        if self.error is not None:
            raise self.error


def stage_weights(src, dst):
    """The weights as the converter gets them. The published GPT-2 files carry the causal-mask
    buffers `h.N.attn.bias` (constants, not weights); this converter's GPT2Model passes them on
    to its tensor-name map, which fails on them ("Can not map tensor 'h.0.attn.bias'"). A file
    that has them is handed over without them; any other is linked as it is."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(src), framework="numpy") as f:
        names = list(f.keys())
        buffers = [n for n in names if n.endswith((".attn.bias", ".attn.masked_bias"))]
        if not buffers:
            dst.symlink_to(src.resolve())
            return
        save_file({n: f.get_tensor(n) for n in names if n not in buffers}, str(dst), metadata=f.metadata())
    print(f"handing llama.cpp's converter {src.name} without the {len(buffers)} causal-mask buffers "
          f"(h.N.attn.bias) that it cannot map", file=sys.stderr)


def convert(model_dir, work, outtype="f32"):
    """llama.cpp's own converter, HF directory -> GGUF in `outtype` (f32, bf16, f16, q8_0: its
    --outtype, which keeps norms, biases and position embeddings F32). GPT-2's converter reads n_ctx, which
    the published configs carry and transformers' save_pretrained does not write: the converter
    gets a copy of config.json with n_ctx = n_positions, and the other files as links."""
    src = Path(os.environ.get("LLAMACPP_SRC", "")) / "vendor" / "llama.cpp"
    converter = src / "convert_hf_to_gguf.py"
    if not converter.is_file():
        sys.exit("error: llama.cpp's converter not found: set $LLAMACPP_SRC by `source scripts/venv.sh "
                 "--with-llamacpp`")
    staged = work / "hf"
    staged.mkdir()
    for f in Path(model_dir).iterdir():
        if f.is_file() and f.name not in ("config.json", "model.safetensors"):
            (staged / f.name).symlink_to(f.resolve())
    stage_weights(Path(model_dir) / "model.safetensors", staged / "model.safetensors")
    config = json.loads((Path(model_dir) / "config.json").read_text())
    config.setdefault("n_ctx", config["n_positions"])
    (staged / "config.json").write_text(json.dumps(config))
    gguf = work / f"model-{outtype}.gguf"
    run = subprocess.run([sys.executable, str(converter), str(staged), "--outtype", outtype, "--outfile", str(gguf)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"error: llama.cpp's converter failed on {model_dir}:\n{run.stderr[-4000:]}")
    return gguf


class Engine:
    """One llama.cpp model on the CPU; `open_context` gives it the context that runs it. With
    `capture` (the dumps), the KV cache is F32, flash attention off and the capture callback
    installed; without it (scripts/bench.py), llama.cpp runs with its own defaults and no
    callback."""

    def __init__(self, gguf, threads, capture=True, extra_bufts=True):
        llama.llama_backend_init()
        mparams = llama.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.use_extra_bufts = extra_bufts
        self.model = llama.llama_model_load_from_file(str(gguf).encode(), mparams)
        if not self.model:
            sys.exit(f"error: llama.cpp could not load {gguf}")
        self.vocab = llama.llama_model_get_vocab(self.model)
        self.n_layer = llama.llama_model_n_layer(self.model)
        self.threads = threads
        self.capture = Capture(self.n_layer) if capture else None
        self.ctx = None
        self.greedy = llama.llama_sampler_init_greedy()

    def open_context(self, n_ctx):
        """A context of n_ctx positions (every batch fits in one ubatch), replacing any other."""
        self.close_context()
        cparams = llama.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_ctx
        cparams.n_ubatch = n_ctx
        cparams.n_threads = self.threads
        cparams.n_threads_batch = self.threads
        if self.capture:
            cparams.type_k = GGML_TYPE_F32
            cparams.type_v = GGML_TYPE_F32
            cparams.flash_attn_type = llama.LLAMA_FLASH_ATTN_TYPE_DISABLED
            cparams.cb_eval = self.capture.callback
            cparams.cb_eval_user_data = None
        self.ctx = llama.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            sys.exit("error: llama.cpp could not make a context")

    def close_context(self):
        if self.ctx:
            llama.llama_free(self.ctx)
            self.ctx = None

    def close(self):
        self.close_context()
        llama.llama_sampler_free(self.greedy)
        llama.llama_model_free(self.model)

    def meta(self, key):
        buf = ctypes.create_string_buffer(256)
        n = llama.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else None

    def model_info(self):
        """The model's sizes as llama.cpp read them from the GGUF: llorch checks them against
        the model it validates, so a converter that dropped or changed one is caught."""
        return {
            "n_layer": self.n_layer,
            "n_head": llama.llama_model_n_head(self.model),
            "n_embd": llama.llama_model_n_embd(self.model),
            "n_positions": llama.llama_model_n_ctx_train(self.model),
            "vocab_size": llama.llama_vocab_n_tokens(self.vocab),
            "layer_norm_epsilon": float(self.meta("gpt2.attention.layer_norm_epsilon")),
            "n_inner": int(self.meta("gpt2.feed_forward_length")),
        }

    def tokenize(self, text):
        data = text.encode()
        buf = (llama.llama_token * (len(data) + 8))()
        n = llama.llama_tokenize(self.vocab, data, len(data), buf, len(buf), False, False)
        if n < 0:
            raise RuntimeError(f"llama_tokenize failed on {text!r}")
        return list(buf[:n])

    def detokenize(self, ids):
        arr = (llama.llama_token * len(ids))(*ids)
        size = 64 + 32 * len(ids)
        buf = ctypes.create_string_buffer(size)
        n = llama.llama_detokenize(self.vocab, arr, len(ids), buf, size, False, True)
        if n < 0:
            raise RuntimeError("llama_detokenize: buffer too small")
        return buf.raw[:n].decode("utf-8", errors="replace")

    def is_eog(self, token):
        return llama.llama_vocab_is_eog(self.vocab, token)

    def reset(self):
        llama.llama_memory_clear(llama.llama_get_memory(self.ctx), True)

    def decode(self, tokens, start, all_logits):
        batch = llama.llama_batch_init(len(tokens), 0, 1)
        try:
            for i, tok in enumerate(tokens):
                batch.token[i] = tok
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = all_logits or i == len(tokens) - 1
            batch.n_tokens = len(tokens)
            rc = llama.llama_decode(self.ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
        finally:
            llama.llama_batch_free(batch)

    def sample_greedy(self):
        return int(llama.llama_sampler_sample(self.greedy, self.ctx, -1))


def checkpoint_tensors(phase, got, n_head, n, past):
    """llama.cpp's captured nodes as llorch's checkpoint tensors of one pass: `n` new positions
    after `past` cached ones. ggml arrays are in numpy order (ne reversed): an activation
    [C, T] in ggml is [T, C] here."""
    out = []

    def add(cp, layer, name, array):
        out.append((phase, cp, layer, name, np.ascontiguousarray(array, dtype=np.float32)))

    def per_head(x):  # [T, C] -> [n_head, T, head_dim]
        t, c = x.shape
        return x.reshape(t, n_head, c // n_head).transpose(1, 0, 2)

    def rank(x, r):  # ggml tensors are 4-D: drop the leading (outer) axes of size 1
        assert all(d == 1 for d in x.shape[:-r]), x.shape
        return x.reshape(x.shape[-r:])

    got = {key: (x if key[0] == 3 or x.ndim == 0 else rank(x, 3 if key[0] == 4 else 2)) for key, x in got.items()}
    kv = past + n
    add(0, None, "embeddings", got[(0, None, "embeddings")])
    layers = sorted({k[1] for k in got if k[1] is not None})
    for layer in layers:
        add(1, layer, "ln_1", got[(1, layer, "ln_1")])
        qkv = got[(2, layer, "qkv")]  # [T, 3C]: q, k, v as llama.cpp's views split it
        c = qkv.shape[1] // 3
        add(2, layer, "q", per_head(qkv[:, :c]))
        add(2, layer, "k", per_head(qkv[:, c:2 * c]))
        add(2, layer, "v", per_head(qkv[:, 2 * c:]))
        k_view = got[(3, layer, "k_cache_view")]  # [streams, n_head, n_kv, head_dim]
        add(3, layer, "k_cache", k_view[0, :, :kv, :])
        v_view = got[(3, layer, "v_cache_view")]  # transposed cache: [streams, n_head, head_dim, n_kv]
        add(3, layer, "v_cache", v_view[0, :, :, :kv].transpose(0, 2, 1))
        kq = got[(4, layer, "kq")]  # [n_head, T, n_kv]: K·Q before soft_max_ext's scale and mask
        mask = got[(4, layer, "kq_mask")]  # [1, T (padded), n_kv]: 0 or -inf
        # What soft_max_ext feeds its softmax: kq·scale + mask, in float32 as ggml computes it,
        # with the scale of llama.cpp's own soft_max node.
        scale = got[(4, layer, "kq_scale")]
        add(4, layer, "scores", kq[..., :kv] * scale + mask[:, :n, :kv])
        add(4, layer, "attn_probs", got[(4, layer, "attn_probs")][..., :kv])
        add(5, layer, "attn_out", got[(5, layer, "attn_out")])
        add(6, layer, "ln_2", got[(6, layer, "ln_2")])
        add(6, layer, "gelu", got[(6, layer, "gelu")])
        add(6, layer, "mlp_out", got[(6, layer, "mlp_out")])
        add(7, layer, "block_out", got[(7, layer, "block_out")])
    add(8, None, "ln_f", got[(8, None, "ln_f")])
    logits = got[(8, None, "logits")]
    add(8, None, "logits", logits)
    add(9, None, "selected_logits", logits[-1])
    return out


def capture_case(engine, n_head, token_ids, max_new_tokens):
    """The prompt's pass with every position's logits, the decode step with llama.cpp's greedy
    token, then a greedy generation from a cleared cache."""
    engine.reset()
    t = len(token_ids)
    with engine.capture.recording():
        engine.decode(token_ids, 0, all_logits=True)
    tensors = checkpoint_tensors("prefill", engine.capture.got, n_head, t, 0)
    next_token = engine.sample_greedy()
    with engine.capture.recording():
        engine.decode([next_token], t, all_logits=True)
    tensors += checkpoint_tensors("decode", engine.capture.got, n_head, 1, t)

    engine.reset()
    engine.decode(token_ids, 0, all_logits=False)
    generated = []
    while len(generated) < max_new_tokens:
        token = engine.sample_greedy()
        generated.append(token)
        if engine.is_eog(token):  # HF's generate keeps the end-of-text token, then stops
            break
        engine.decode([token], t + len(generated) - 1, all_logits=False)
    return tensors, next_token, generated


def capture_corpus(engine, n_head, ids):
    """One corpus window's pass: every position's logits [W, V] and llama.cpp's greedy token."""
    engine.reset()
    with engine.capture.recording():
        engine.decode(ids, 0, all_logits=True)
    tensors = checkpoint_tensors("prefill", engine.capture.got, n_head, len(ids), 0)
    logits = [t for t in tensors if t[1] == 8 and t[3] == "logits"]
    return logits, int(np.argmax(logits[0][4][-1]))


def check_rounded_weights(model_dir, gguf_path, outtype):
    """The GGUF's matrices, dequantized by gguf-py, must be bit for bit the HF model's weights as
    scripts/rounding.py rounds them: then llama.cpp's dump is of the same rounded weights as the
    references made with --weights-as and as llorch --weights."""
    from safetensors.numpy import load_file

    from rounding import gguf_module, rounded

    gguf = gguf_module()
    hf = load_file(str(Path(model_dir) / "model.safetensors"))
    hf = {k.removeprefix("transformer."): v for k, v in hf.items()}
    names = {"attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_up": "mlp.c_fc",
             "ffn_down": "mlp.c_proj"}
    checked = 0
    for t in gguf.GGUFReader(str(gguf_path)).tensors:
        if t.name == "token_embd.weight":
            ours, along_rows = hf["wte.weight"], True
        elif t.name.startswith("blk.") and t.name.endswith(".weight") and t.name.split(".")[2] in names:
            layer, kind = t.name.split(".")[1:3]
            ours, along_rows = hf[f"h.{layer}.{names[kind]}.weight"].T, True  # ggml's rows: [out, in]
        else:
            continue
        theirs = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ours.shape)
        expected = rounded(np.ascontiguousarray(ours, dtype=np.float32), outtype, along_rows)
        if not np.array_equal(theirs.view(np.uint32), expected.view(np.uint32)):
            bad = int(np.sum(theirs != expected))
            sys.exit(f"error: llama.cpp's {t.name} ({t.tensor_type.name}) differs from the weights rounded to "
                     f"{outtype} in {bad} elements")
        checked += 1
    if checked != 1 + 4 * sum(1 for k in hf if k.endswith("attn.c_attn.weight")):
        sys.exit(f"error: {gguf_path} has {checked} of the model's matrices")
    print(f"llama.cpp's {checked} matrices are the model's weights rounded to {outtype}, bit for bit", file=sys.stderr)


def generator_info(threads, outtype):
    src = Path(os.environ.get("LLAMACPP_SRC", ""))
    info = {
        "name": f"llama.cpp-{outtype}",
        "script": "scripts/dump_llamacpp.py",
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "llama.cpp": f"vendored in llama-cpp-python {llama_cpp.__version__} ({src.name})",
        "system_info": llama.llama_print_system_info().decode().strip(),
        "numpy": np.__version__,
        "dtype": "float32",
        "gguf": f"{outtype.upper()}, converted by llama.cpp's convert_hf_to_gguf.py --outtype {outtype}",
        "kv_cache": "F32",
        "flash_attn": False,
        "threads": threads,
    }
    if outtype != "f32":
        info["weights_as"] = outtype
        info["weights_rounding"] = "llama.cpp's convert_hf_to_gguf.py (checked equal to scripts/rounding.py's)"
    if outtype == "q8_0":
        info["extra_bufts"] = False
    return info


_QUIET = llama.llama_log_callback(lambda *_: None)  # kept alive for as long as llama.cpp may call it


def quiet_logs():
    """Silences llama.cpp's load chatter on stderr."""
    llama.llama_log_set(_QUIET, None)


def dump_corpus(args, gguf):
    """The corpus's windows as cases (`llorch validate --corpus`), cut as dump_format cuts it."""
    engine = Engine(gguf, args.threads, extra_bufts=args.outtype != "q8_0")
    tokens = engine.tokenize(Path(args.corpus).read_text(encoding="utf-8"))
    info, windows = corpus_windows(args, tokens, llama.llama_model_n_ctx_train(engine.model))
    engine.open_context(args.window)
    model = engine.model_info()
    manifest = {"format": FORMAT, "generator": generator_info(args.threads, args.outtype), "model": model,
                "corpus": info, "cases": []}
    for i, ids in enumerate(windows):
        tensors, next_token = capture_corpus(engine, model["n_head"], ids)
        entries, _ = write_tensors(Path(args.out), f"w{i:04d}", tensors, "float32")
        manifest["cases"].append(corpus_case(i, ids, entries, next_token))
    engine.close()
    write_manifest(Path(args.out), manifest)
    print(f"corpus {args.corpus}: {info['tokens']} tokens, {len(windows)} windows", file=sys.stderr)


def main():
    p = dump_parser(__doc__)
    add_corpus_arguments(p)
    p.add_argument("--threads", type=int, default=2, help="llama.cpp's CPU threads (default 2)")
    p.add_argument("--keep-gguf", help="also keep the converted GGUF at this path")
    p.add_argument("--outtype", choices=("f32", "bf16", "f16", "q8_0"), default="f32",
                   help="the GGUF's weight type, the converter's --outtype (default f32)")
    args = p.parse_args()

    check_model_dir(args.model)
    cases = [] if args.corpus else read_cases(args)
    quiet_logs()
    with tempfile.TemporaryDirectory() as tmp:
        gguf = convert(args.model, Path(tmp), args.outtype)
        if args.keep_gguf:
            shutil.copy(gguf, args.keep_gguf)
        if args.outtype != "f32":
            check_rounded_weights(args.model, gguf, args.outtype)
        if args.corpus:
            dump_corpus(args, gguf)
            return
        longest = 0
        # Q8_0 with llama.cpp's extra buffer types (its repacked weights) crashed in llama_decode
        # on the Intel Xeon with AMX here (scripts/bench.py says more): without them.
        engine = Engine(gguf, args.threads, extra_bufts=args.outtype != "q8_0")
        n_ctx_train = llama.llama_model_n_ctx_train(engine.model)
        token_ids_of = {}
        for case in cases:
            ids = case_token_ids(case, engine.tokenize, n_ctx_train)
            token_ids_of[case["name"]] = ids
            longest = max(longest, len(ids) + case["max_new_tokens"] + 1)
        engine.open_context(longest)
        info = engine.model_info()
        n_head = info["n_head"]
        out = Path(args.out)
        manifest = {"format": FORMAT, "generator": generator_info(args.threads, args.outtype), "model": info,
                    "omitted": OMITTED, "cases": []}
        for case in cases:
            token_ids = token_ids_of[case["name"]]
            tensors, next_token, generated = capture_case(engine, n_head, token_ids, case["max_new_tokens"])
            entries, files = write_tensors(out, case["name"], tensors, "float32")
            manifest["cases"].append(case_entry(case, token_ids, next_token, generated,
                                                engine.detokenize(token_ids + generated), entries))
            print(f"case {case['name']}: {len(token_ids)} prompt tokens, {len(entries)} tensors in {files} "
                  f"files, greedy continuation {generated}", file=sys.stderr)
        engine.close()
    write_manifest(out, manifest)


if __name__ == "__main__":
    main()
