import sys

from mtl_training.apps.train_cli import main

sys.exit(main())
