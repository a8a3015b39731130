"""Dynamic, torque/force-controlled Gymnasium tasks for the async-inference studies:
analytic swing-up experts that pick the first pumping direction at random per episode, their
demonstrations, and the flow policies trained on them (``policies/flow/checkpoints/gym_*``)."""
