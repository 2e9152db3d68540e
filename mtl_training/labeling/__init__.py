"""Labelling the frames that matter: `select` (choose and export frames for a labelling tool)
and `import_labels` (bring the finished masks back into the folder dataset).

`LabelingError` is shared by both steps, so it lives with the package; the apps print it as one
line naming the file.
"""


class LabelingError(ValueError):
    """A selection or label import cannot go ahead; the message names the file and the fix."""
