import sys

from mtl_training.cli import main

sys.exit(main())
