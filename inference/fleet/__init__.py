"""The fleet inference service: one policy on Ray Serve answering many robots, each with its own RTC.

``python -m inference.fleet serve policy=<name>`` deploys one Serve application per policy
(``deployment.py``): ``num_replicas`` stateless replicas, each holding ONE copy of the model and
batching the requests of different robots into one guided sampling call (``policies.batched``).
Every robot keeps its own RTC planner (trigger, snapshot, delay estimate, merge) in its own control
process and talks to the service through ``algorithms/rtc_fleet/client.py`` (Serve's Python handle
API, no HTTP; the message format both ends share is ``algorithms/wire.py``); any
replica answers any robot, so a replica restart loses nothing.
"""
