"""The flags every in-process runtime of the test suite starts with (test/conftest.py's `serena`
fixture, and the Ray workers of test/test_ray_executor.py, which must match it byte for byte)."""

TEST_FLAGS = ["--use-cpu", "all", "--no-half"]
