"""mtl_training: what a workstation adds (datasets, teacher, pseudo-labels, student, export).

May import mtl_perception (core, runtime); mtl_perception never imports it. `apps/` holds the
command-line programs, the only code that parses arguments and prints one-line user errors.
"""
