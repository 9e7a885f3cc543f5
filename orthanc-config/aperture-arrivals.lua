-- Aperture: hands the association's called AE title and peer address of each C-STORE to the Python filter
-- (aperture-arrivals.py), which Orthanc's Python API does not tell them. Runs just before it, on the same thread.
function ReceivedInstanceFilter(dicom, origin, info)
  if origin['RequestOrigin'] == 'DicomProtocol' then
    RestApiPost('/aperture/arrival-origin', DumpJson(origin, true))
  end
  return true
end
