"""Fault injection for agenthost: knobs for the reference runtime and a hard process-group kill.

See `chaos._faults` for the contract of each name.
"""

from chaos._faults import FAULTS_ENV_VAR, RuntimeFaults, decode_faults, encode_faults, kill_process_group

__all__ = ["FAULTS_ENV_VAR", "RuntimeFaults", "decode_faults", "encode_faults", "kill_process_group"]
