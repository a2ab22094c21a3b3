"""Model loading, shared by ``core/llm`` (the transformers and llama.cpp providers) and ``core/train`` (and every
command that loads a model), importing neither:

- ``builtin.py``: the built-in model table (``smollm2-135m``) and where each model's file is;
- ``modelref.py``: a model reference (built-in name, GGUF file, transformers folder, cached hub id) to a local path;
- ``modelfiles.py``: what a model file holds (GGUF metadata, a transformers folder's config and parameter counts);
- ``device.py``: device, dtype, seeding and bitsandbytes quantization settings;
- ``load.py``: ``load_causal_lm`` (base + optional 4-bit + optional PEFT adapters) and ``hf_model_folder``;
- ``convert.py``: GGUF -> transformers folder, converted once and cached; ``export.py``: a model as a plain
  transformers folder; ``gguf_export.py``: transformers folder -> GGUF (llama.cpp's converter) and quantization;
- ``adapters.py``: PEFT adapter folders (checks, what an adapter changes);
- ``multilora.py``: the fused multi-LoRA forward of mixed-adapter batches.

Importing this package (or any module of it) imports no torch, transformers or peft: they are imported inside the
functions that use them.
"""
