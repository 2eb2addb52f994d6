"""Packaging for the ALPR node runtime, HQ and tools."""
from setuptools import find_packages, setup

PACKAGES = ["node", "inference", "transport", "hardware", "provisioning", "hil", "hq"]

setup(
    name="alpr-node",
    version="0.1.0",
    description="Firmware-style runtime for fixed ALPR camera nodes, with HQ ingest and records",
    python_requires=">=3.11",
    packages=find_packages(include=[p for name in PACKAGES for p in (name, name + ".*")]),
    include_package_data=True,
    package_data={
        "inference": ["models/*.tflite", "models/*.json", "models/*.md", "fonts/*"],
        "hil": ["clips/**/*", "scenarios/*.toml"],
        "node": ["systemd/*", "examples/*.toml"],
    },
    install_requires=[
        "cryptography>=46",
        "paho-mqtt>=2.1,<3",
        "pydantic>=2.5,<3",
        "numpy>=1.24",
        "pillow>=10",
        "opencv-python-headless>=4.8",
        # LiteRT; on platforms without a wheel, tflite-runtime is accepted at run time.
        "ai-edge-litert>=1.2; platform_machine in 'x86_64 aarch64 AMD64 arm64'",
        "argon2-cffi>=23",
    ],
    extras_require={
        # picamera2 itself comes from apt (python3-picamera2) on Raspberry Pi OS: it needs the
        # system libcamera, so the Pi venv is made with --system-site-packages.
        # rpi-lgpio on 32- and 64-bit Pi OS alike: RPi.GPIO 0.7.1's edge detection fails on kernels
        # 6.6 and later ("Failed to add edge detection"), which every current Pi OS runs.
        "pi": ["rpi-lgpio>=0.6; platform_machine=='aarch64' or platform_machine=='armv7l'"],
        "train": ["tensorflow-cpu>=2.16"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "psycopg[binary]>=3.1", "ruff"],
        "postgres": ["psycopg[binary]>=3.1"],
    },
    entry_points={
        "console_scripts": [
            "alpr-node=node.cli:main",
            "alpr-provision=provisioning.cli:main",
            "alpr-hq=hq.cli:main",
            "alpr-hil=hil.cli:main",
            "alpr-train=inference.training.cli:main",
        ]
    },
)
