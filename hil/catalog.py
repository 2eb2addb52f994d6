"""The shipped synthetic clips (hil/clips/<name>), defined once so `alpr-hil synth` can remake them.

Plates are fixed strings (not random) so the ground truth is stable from release to release;
each clip's seed drives the plate art, noise and background. A vehicle takes 2 s from first
sight (20 m) to passing under the camera (3 m), about 30 km/h.
"""
from __future__ import annotations

from hil.synth import ClipSpec, FalseTrigger, Look, VehiclePass

CLIPS: dict[str, ClipSpec] = {
    "day-3-vehicles": ClipSpec(
        name="day-3-vehicles", duration_s=8.5, seed=11,
        description="Daylight, one lane, three vehicles a few seconds apart (synthetic)",
        look=Look(gain=1.0, noise_sigma=2.0, exposure_us=1000, lux=900.0),
        vehicles=(VehiclePass("7ABC123", "ca", enter_s=0.3, colour=(170, 30, 30)),
                  VehiclePass("KXT-4821", "tx", enter_s=2.9, colour=(200, 200, 205)),
                  VehiclePass("5RJM907", "ny", enter_s=5.5, duration_s=2.4, colour=(30, 60, 140)))),
    "night-ir-2-vehicles": ClipSpec(
        name="night-ir-2-vehicles", duration_s=6.5, seed=23,
        description="Night, IR illuminator, monochrome; long exposure gives motion blur; high gain noise (synthetic)",
        look=Look(night_ir=True, gain=1.3, noise_sigma=4.0, exposure_us=6000, lux=3.0),
        vehicles=(VehiclePass("8DFG552", "ca", enter_s=0.3, colour=(90, 90, 90)),
                  VehiclePass("HTW 3390", "fl", enter_s=3.3, duration_s=1.8, colour=(150, 150, 150)))),
    "close-following": ClipSpec(
        name="close-following", duration_s=7.5, seed=37,
        description="Three vehicles tailgating in lane 1 (about 8 m apart), one in lane 2 on loop2 (synthetic)",
        look=Look(gain=0.95, noise_sigma=2.5, exposure_us=2000, lux=600.0),
        vehicles=(VehiclePass("4PLM218", "ca", enter_s=0.3, colour=(30, 110, 60)),
                  VehiclePass("BWK 7731", "wa", enter_s=1.3, colour=(220, 220, 220)),
                  VehiclePass("6TRE045", "ca", enter_s=2.3, colour=(120, 40, 120)),
                  VehiclePass("JNX-5206", "az", enter_s=4.6, lane=2, colour=(200, 150, 30)))),
    "false-trigger": ClipSpec(
        name="false-trigger", duration_s=6.0, seed=41,
        description="Overcast; the loop fires once with no vehicle (no read expected), then one vehicle (synthetic)",
        look=Look(gain=0.75, noise_sigma=3.0, exposure_us=1500, lux=250.0),
        false_triggers=(FalseTrigger(at_s=1.0, hold_s=0.5),),
        vehicles=(VehiclePass("3MKV664", "nv", enter_s=3.0, colour=(60, 60, 70)),)),
}
