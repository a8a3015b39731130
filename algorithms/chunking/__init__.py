"""The chunking core every execution mode runs: chunk bookkeeping (``chunk_logic``), the knobs
(``config``) and the control-side planner (``planner``). Pure logic: no processes, clocks or I/O."""
