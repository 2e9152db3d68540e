"""The programs: the only code that parses arguments and prints the one-line user errors.

`mtl-train` is train_cli.py over the command table it builds from train_commands.py (synth,
train, evaluate, export), pseudo_commands.py, bag_commands.py and experiments/; command.py holds
what the commands share (Command, UserError, USER_ERRORS). `mtl-replay` is replay_cli.py.
Nothing below this package imports it.
"""
