"""The bundled trainer (LoRA/QLoRA SFT, DPO, reward model) and its evaluation."""

import logging

# bitsandbytes (QLoRA, imported by peft) warns at import when the optional `kernels` package (a
# faster CPU 4-bit kernel fetched from the Hub) is absent; runs are offline and use its built-in path.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
