"""hardware package: cameras, GPIO, clip replay and recording. Imports nothing else of ours.

Modules (import what you need; nothing is imported here, so Pi-only libraries stay unloaded):
errors (HardwareError and subclasses), frame (Frame), frame_queue (FrameQueue), camera (Camera,
CameraSupervisor), picamera2_backend (Picamera2Camera), standin_picamera2, clip (Clip,
ClipWriter), clip_camera (ClipCamera), timeline (ReplayTimeline), clip_pins (ClipPins), gpio
(TriggerInput, OutputPin), standin_gpio (StandinGPIO), recorder (ClipRecorder).
"""
