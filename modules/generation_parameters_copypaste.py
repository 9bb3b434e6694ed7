"""A1111's older name for `modules.infotext_utils`, still imported by extensions
(`from modules import generation_parameters_copypaste as parameters_copypaste`). It is the same
module object, so registrations made through either name are seen by both."""
import sys

from modules import infotext_utils

sys.modules[__name__] = infotext_utils
