"""`python -m agenthost`: the command line (same as the `agenthost` script)."""

from agenthost._cli import main

raise SystemExit(main())
