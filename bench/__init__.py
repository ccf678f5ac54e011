"""agenthost benchmarks: `python -m bench` (or `make bench`) prints two throughput comparisons as ratios.

1. Deltas/s through the whole host (`AgentHost` -> `TurnHandle` events) against the floor of reading the same
   reference runtime's stdout directly (pipe + `LineBuffer` + `decode_line`); see `bench._deltas`.
2. Durable turn completions/s through the persistence actor (`FinishTurn`: SQLite commit + transcript atomic
   replace) against bare APSW commits with the same durability settings; see `bench._durability`.

Figures are reported, never asserted: the run exits 0 unless something crashed. `--quick` shrinks every parameter
for the smoke test; `--json PATH` also writes the figures as JSON. Nothing here is part of agenthost's runtime.
"""
