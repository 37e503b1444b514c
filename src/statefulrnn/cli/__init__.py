"""The `statefulrnn` command: it parses arguments, calls the library and prints; nothing else.

    common.py    what the commands share: help formatter, option groups (defaults from the library's
                 `TrainConfig`, `ModelConfig`, `ForecastSpec`), `emit`, the one-line error report
    layout.py    statefulrnn layout
    prepare.py   statefulrnn prepare text
    train.py     statefulrnn train text|series
    evaluate.py  statefulrnn eval
    generate.py  statefulrnn generate, statefulrnn forecast
    demo.py      statefulrnn demo
    serve.py     statefulrnn serve
    export.py    statefulrnn export, statefulrnn import-keras
    study.py     statefulrnn study
    main.py      `build_parser` (every command) and `main` (the entry point)

The command modules import `common.py` and the library, never `main.py`.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
