"""Sim tasks: code that knows both a simulated robot and the policies trained for it (scripted experts,
their IK, demonstration recording, training and evaluation). ``policies/`` and ``robots/`` never import
each other; what needs both lives here."""
