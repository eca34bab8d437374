"""The imaging and detection kernel: scans decoded and rendered (`imaging`), the ONNX detector with its
verified, pinned model (`detector`).

It imports nothing of the station application (numpy, OpenCV, onnxruntime and drivers/xde.py only), so
the simulator (simulator/tip.py) and the model tools (models/) use it without the lane, the store or the
daemon; tests/test_architecture.py keeps it so.
"""
