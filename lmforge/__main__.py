"""`python -m lmforge ...`, which is how `torchrun -m lmforge pretrain ...` starts each rank."""

from lmforge.cli.main import main

raise SystemExit(main())
