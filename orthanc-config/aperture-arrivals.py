# Aperture: every C-STORE arrival reaches the gateway, including those of objects Orthanc already holds.
#
# Orthanc 1.10 answers AlreadyStored to a C-STORE of an instance it holds and logs no change, so the gateway's change
# feed never sees such an arrival. This filter runs before Orthanc stores anything. For an instance whose SOP Instance
# UID the archive already holds, it hands the received bytes and the association's AE titles and peer address to the
# gateway (which parses them within bounds, proves identity on the data set, and links the routed project), and
# answers the modality with the gateway's verdict: accepted (Orthanc then keeps its copy: AlreadyStored), or refused
# (a different data set under an archived UID is never stored). New instances are accepted at once: Orthanc stores
# them and the change feed routes them from the metadata Orthanc keeps.
#
# Orthanc's Python API gives the filter the calling AE title but not the called AE title nor the peer address, so a
# re-arrival is routed by its calling AE title (and content rules). Orthanc 1.10's Lua filters do see the called AE
# title, but ReceivedInstanceFilter also runs for every REST store, and handing the tags of a malformed object to Lua
# brought Orthanc down under the gateway's STOW fuzz test; its C-STORE-only twin, ReceivedCStoreInstanceFilter,
# drops every instance it accepts in 1.10.1 (answers Success, stores nothing). Neither is used.
#
# The gateway's leading indexer registers where to reach it (POST /aperture/arrival-hook), again and again before the
# registration expires, so a restarted Orthanc or a new leader is found within seconds.
import json
import threading
import time
import urllib.error
import urllib.request

import orthanc

# DIMSE statuses (PS3.7 Annex C). 0xA700 "Refused: Out of Resources" tells a sender to try again later.
SUCCESS = 0x0000
RETRY_LATER = 0xA700

_lock = threading.Lock()
_hook = {'url': None, 'token': None, 'expires': 0.0}

# SOP Instance UIDs of new instances this filter let through recently. Two associations that send the same new
# instance at once both find it not archived yet; Orthanc stores the first and answers the second AlreadyStored with
# no change, so the second route would be lost. An arrival of a UID let through in the last FIRST_ARRIVAL_S seconds is
# handed to the gateway like a re-arrival: the gateway waits for the first copy to be indexed, then judges identity
# and links the second route.
FIRST_ARRIVAL_S = 30.0
_first_arrivals = {}


def _hook_callback(output, uri, **request):
    if request['method'] != 'POST':
        output.SendMethodNotAllowed('POST')
        return
    body = json.loads(request['body'])
    with _lock:
        _hook['url'] = str(body['url'])
        _hook['token'] = str(body['token'])
        _hook['expires'] = time.monotonic() + float(body.get('ttlSeconds', 30))
    output.AnswerBuffer('{}', 'application/json')


def _already_archived(sop_uid):
    if not sop_uid:
        return False
    found = json.loads(orthanc.RestApiPost('/tools/lookup', sop_uid))
    return any(r.get('Type') == 'Instance' for r in found)


def _filter(instance):
    with _lock:
        hook = dict(_hook)
    try:
        tags = json.loads(instance.GetInstanceSimplifiedJson())
        sop_uid = tags.get('SOPInstanceUID', '').strip()
        now = time.monotonic()
        with _lock:
            for uid in [u for u, t in _first_arrivals.items() if now - t > FIRST_ARRIVAL_S]:
                del _first_arrivals[uid]
            racing = bool(sop_uid) and sop_uid in _first_arrivals
            if sop_uid and not racing:
                _first_arrivals[sop_uid] = now
        if not racing and not _already_archived(sop_uid):
            return SUCCESS
    except Exception as e:  # Orthanc parsed it already; a lookup that fails must not lose the arrival.
        orthanc.LogWarning('aperture: archive lookup failed (%s): asking the sender to retry' % type(e).__name__)
        return RETRY_LATER
    if not hook['url'] or hook['expires'] < time.monotonic():
        orthanc.LogWarning('aperture: no gateway registered for re-arrivals: asking the sender to retry')
        return RETRY_LATER
    headers = {
        'Content-Type': 'application/dicom',
        'Authorization': 'Bearer ' + hook['token'],
        'X-Aperture-Calling-AET': instance.GetInstanceRemoteAet(),
    }
    req = urllib.request.Request(hook['url'], data=instance.GetInstanceData(), headers=headers, method='POST')
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return int(json.loads(res.read())['status'])
    except Exception as e:
        orthanc.LogWarning('aperture: gateway did not answer a re-arrival (%s): asking the sender to retry'
                           % type(e).__name__)
        return RETRY_LATER


orthanc.RegisterRestCallback('/aperture/arrival-hook', _hook_callback)
orthanc.RegisterIncomingCStoreInstanceFilter(_filter)
