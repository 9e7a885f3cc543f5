#!/usr/bin/python3
"""Thresholds every image of a DICOM series into a binary mask, written as a derived Secondary Capture series.

Aperture's demonstration of a tool that writes DICOM back (issue 19). Each output instance is a new object in a new
series of the same study: Image Type DERIVED\\SECONDARY, Source Image Sequence naming the image it came from and
Referenced Series Sequence naming the source series (PS3.3 C.7.6.1.1.3 / C.12.1.1.3 / C.7.6.16.2.5), so the result
can be traced to its sources; summary.json beside them counts the pixels in each mask. Reads only its input folder,
writes only its output folder.

Usage: threshold.py INPUT_DIR OUTPUT_DIR --threshold T [--delay S]
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
COPIED = [
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
    "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "FrameOfReferenceUID",
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--threshold", type=float, required=True)
    ap.add_argument("--delay", type=float, default=0.0)
    a = ap.parse_args()
    if a.delay > 0:
        time.sleep(a.delay)  # lets tests stop a run mid-way
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(a.input) for f in fs)
    sources = [pydicom.dcmread(f) for f in files]
    sources = [s for s in sources if "PixelData" in s]
    if not sources:
        print("no images in the input", file=sys.stderr)
        return 2
    series_uid = generate_uid()
    os.makedirs(a.output, exist_ok=True)
    in_mask = []
    for n, src in enumerate(sources, start=1):
        mask = (src.pixel_array.astype(np.float64) >= a.threshold).astype(np.uint8) * 255
        in_mask.append(int(np.count_nonzero(mask)))
        ds = Dataset()
        for k in COPIED:
            if k in src:
                setattr(ds, k, getattr(src, k))
        ds.SOPClassUID = SECONDARY_CAPTURE
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 900 + int(getattr(src, "SeriesNumber", 0) or 0) % 100
        ds.SeriesDescription = f"Threshold >= {a.threshold:g}"
        ds.InstanceNumber = n
        ds.Modality = "OT"
        ds.ConversionType = "WSD"
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.DerivationDescription = f"binary mask of pixels >= {a.threshold:g} (Aperture threshold tool)"
        ref = Dataset()
        ref.ReferencedSOPClassUID = src.SOPClassUID
        ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
        ds.SourceImageSequence = Sequence([ref])
        rs = Dataset()
        rs.SeriesInstanceUID = src.SeriesInstanceUID
        rs.StudyInstanceUID = src.StudyInstanceUID
        ds.ReferencedSeriesSequence = Sequence([rs])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = mask.shape
        ds.BitsAllocated = 8
        ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = mask.tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.is_little_endian = True  # pydicom 2.x (Debian bookworm) encodes from these two
        ds.is_implicit_VR = False
        ds.save_as(os.path.join(a.output, f"mask-{n:04d}.dcm"), write_like_original=False)
    # A non-DICOM result beside the masks (it becomes a file of the subject): counts only, no identifiers.
    with open(os.path.join(a.output, "summary.json"), "w") as f:
        json.dump({"threshold": a.threshold, "images": len(sources), "pixels_in_mask": in_mask}, f)
    print(f"wrote {len(sources)} mask images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
