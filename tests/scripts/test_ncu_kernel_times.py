#!/usr/bin/env python3
"""scripts/ncu_kernel_times.py on ncu logs written here (ctest ScriptsNcuKernelTimes)."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "ncu_kernel_times.py")
HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
          '"Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit",'
          '"Metric Value"')


def row(i, kernel, unit, value, metric="gpu__time_duration.sum"):
    return (f'"{i}","77","repshare","127.0.0.1","{kernel}","1","13","(256, 1, 1)",'
            f'"(64, 1, 1)","0","9.0","Command line profiler metrics","{metric}","{unit}",'
            f'"{value}"')


def run(log_text):
    with tempfile.TemporaryDirectory() as d:
        log, out = os.path.join(d, "ncu.csv"), os.path.join(d, "out.json")
        with open(log, "w") as f:
            f.write(log_text)
        p = subprocess.run([sys.executable, SCRIPT, log, out, "--model", "m", "--precision",
                            "fp16"], capture_output=True, text=True)
        summary = json.load(open(out)) if os.path.exists(out) else None
        return p, summary


class NcuKernelTimes(unittest.TestCase):
    def test_sums_by_kernel_slowest_first(self):
        log = "\n".join([
            "==PROF== Connected to process 77 (/build/repshare)",
            '==PROF== Profiling "depthwise_fill_kernel" - 0: 0%....50%....100% - 1 pass',
            HEADER,
            row(0, "depthwise_fill_kernel", "nsecond", "2,048"),
            row(0, "depthwise_fill_kernel", "register/thread", "32",
                metric="launch__registers_per_thread"),
            row(1, "nvjet_sm90_hsh_64x8_64x16_2x1_v_bz_TNN", "usecond", "5.5"),
            row(2, "depthwise_fill_kernel", "nsecond", "1952"),
            "==PROF== Disconnected from process 77",
        ]) + "\n"
        p, s = run(log)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(s["kernels"], 3)
        self.assertAlmostEqual(s["kernel_ms"], 0.0095)
        self.assertEqual([k["name"] for k in s["by_kernel"]],
                         ["nvjet_sm90_hsh_64x8_64x16_2x1_v_bz_TNN", "depthwise_fill_kernel"])
        self.assertEqual(s["by_kernel"][1]["launches"], 2)
        self.assertAlmostEqual(s["by_kernel"][1]["ms"], 0.004)
        self.assertEqual((s["model"], s["precision"]), ("m", "fp16"))
        self.assertEqual(s["launches"][1], {"name": "nvjet_sm90_hsh_64x8_64x16_2x1_v_bz_TNN",
                                            "grid": "(64, 1, 1)", "block": "(256, 1, 1)",
                                            "us": 5.5})
        self.assertEqual([l["us"] for l in s["launches"]], [2.048, 5.5, 1.952])

    def test_a_launch_is_named_without_its_parameters(self):
        kernel = "void k<float>(repshare::Conv32, const T1 *)"
        p, s = run(HEADER + "\n" + row(0, kernel, "nsecond", "1000") + "\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(s["launches"][0]["name"], "void k<float>")
        self.assertEqual(s["by_kernel"][0]["name"], kernel)

    def test_a_log_without_durations_fails_and_writes_nothing(self):
        for text, says in [("==PROF== Disconnected from process 77\n", "no CSV rows"),
                           (HEADER + "\n" + row(0, "k", "%", "50", metric="sm__x") + "\n",
                            "no gpu__time_duration.sum rows"),
                           (HEADER + "\n" + row(0, "k", "cycle", "50") + "\n",
                            "unknown duration unit 'cycle'")]:
            p, s = run(text)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(says, p.stderr)
            self.assertIsNone(s)


if __name__ == "__main__":
    unittest.main()
