"""The interop scenario through zeep, generated at run time from the live `?wsdl` of a vwsd.

What it is for: `make interop` (interop/run.sh) runs it against a vwsd it started; it prints one
line per step, `RESULT <step> PASS|FAIL <detail>`, and the runner builds the generator x
operation table from them. It is also the zeep example the README points to: how to echo the
EPR's key as a header, how to send QueryResourceProperties (see `query`), how to read typed
WS-BaseFaults (see `typed_fault`).

Usage: python scenario.py BASE_URL IMAGE_URL
       (BASE_URL = http://HOST:PORT/wsrf/services, IMAGE_URL = the disk image to deploy)
"""

import sys
import time
import traceback
from datetime import datetime, timedelta, timezone

from lxml import etree
from zeep import Client
from zeep.exceptions import Fault

VWS = "http://vws.dev/2026/11/workspace"
NIMBUS = "http://www.globus.org/2008/06/workspace"
WSRP = "http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceProperties-1.2-draft-01.xsd"
WSRL = "http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceLifetime-1.2-draft-01.xsd"
WSA = "http://schemas.xmlsoap.org/ws/2004/03/addressing"
XPATH = "http://www.w3.org/TR/1999/REC-xpath-19991116"

failures = 0


def result(step, ok, detail=""):
    global failures
    if not ok:
        failures += 1
    detail = " ".join(str(detail).split())[:300]
    print(f"RESULT {step} {'PASS' if ok else 'FAIL'} {detail}", flush=True)


def step(name, fn):
    """Run one step; an exception is that step's failure. Returns fn's value or None."""
    try:
        ok, detail, value = fn()
    except Exception as e:  # noqa: BLE001 - every failure is reported, the scenario goes on
        traceback.print_exc(file=sys.stderr)
        result(name, False, f"{type(e).__name__}: {e}")
        return None
    result(name, ok, detail)
    return value


def typed_fault(client, fault, qname):
    """A WS-BaseFaults detail as zeep's own object of the fault element's type (or None)."""
    if fault.detail is None:
        return None
    for el in fault.detail:
        if el.tag == qname:
            return client.get_element(qname).parse(el, client.wsdl.types)
    return None


def error_code(d):
    """WS-BaseFaults' ErrorCode: its dialect and its text (zeep's _value_1)."""
    if d is None or d.ErrorCode is None:
        return None
    return f"[{d.ErrorCode.dialect}]{d.ErrorCode._value_1}"


def main():
    base, image = sys.argv[1], sys.argv[2]
    factory = Client(f"{base}/WorkspaceFactoryService?wsdl")
    ws = Client(f"{base}/WorkspaceService?wsdl")
    svc = ws.service

    # -- create: the description built from the schema's types -------------------------------
    def create():
        reply = factory.service.create(
            virtualWorkspace={
                "category": {"name": "vm", "vmm": "xen"},
                "lifeCycle": 3600,
                "hardware": {
                    "ram": {"_value_1": "", "min": 64, "max": 128},
                    "disk": [{"name": "root", "image": {"_value_1": image}}],
                },
            }
        )
        # ReferenceProperties is a lax xs:any: zeep hands back the key as the element itself,
        # which goes back as a SOAP header unchanged.
        props = reply.ReferenceProperties._value_1
        key = [p for p in props if etree.QName(p).localname == "WorkspaceKey"]
        address = reply.Address._value_1
        ok = address.endswith("/WorkspaceService") and len(key) == 1 and key[0].text
        return ok, f"address={address} key={etree.tostring(key[0]).decode() if key else None}", key[0]

    key = step("create", create)

    # A description the schema allows but the reader refuses ('..' in a relative file: URL):
    # InvalidDescriptionFault, whose ErrorCode text names the element's path.
    def invalid_description():
        bad = {"category": {"name": "vm", "vmm": "xen"}, "hardware": {"disk": [{"name": "root", "image": {"_value_1": "file:images/../x"}}]}}
        try:
            factory.service.create(virtualWorkspace=bad)
            return False, "no fault", None
        except Fault as f:
            d = typed_fault(factory, f, f"{{{VWS}}}InvalidDescriptionFault")
            code = error_code(d)
            return code is not None and code.endswith("/virtualWorkspace/hardware/disk/image"), f"{type(d).__name__}: ErrorCode={code}", None

    step("InvalidDescriptionFault", invalid_description)
    if key is None:
        return
    hdr = [key]

    def current_state():
        # zeep reads a lax xs:any whose element the schema declares (n:CurrentState) as that
        # element's value: here a list of one string.
        r = svc.GetResourceProperty(etree.QName(NIMBUS, "CurrentState"), _soapheaders=hdr)
        assert len(r) == 1, f"{len(r)} values"
        return r[0]

    def get_rp():
        state = current_state()
        return state == "Unstaged", f"CurrentState={state}", None

    step("GetResourceProperty", get_rp)

    def get_multiple():
        r = svc.GetMultipleResourceProperties(
            ResourceProperty=[etree.QName(NIMBUS, "CurrentState"), etree.QName(WSRL, "TerminationTime")], _soapheaders=hdr
        )
        # Values in the order asked: CurrentState (a string), TerminationTime (a datetime).
        ok = len(r) == 2 and r[0] == "Unstaged" and isinstance(r[1], datetime)
        return ok, f"values={r}", None

    step("GetMultipleResourceProperties", get_multiple)

    # -- QueryResourceProperties: QueryExpressionType is mixed content (the XPath is its text),
    # which a plain zeep call cannot send. The working way: let zeep build the message, put the
    # XPath into QueryExpression, post it with zeep's transport and let zeep parse the reply.
    def query():
        op = "QueryResourceProperties"
        env = ws.create_message(svc, op, QueryExpression={"Dialect": XPATH}, _soapheaders=hdr)
        qe = env.find(f".//{{{WSRP}}}QueryExpression")
        qe.text = "//*[local-name()='CurrentState']"
        binding = svc._binding
        address = svc._binding_options["address"]
        headers = {"SOAPAction": f'"{binding.get(op).soapaction}"', "Content-Type": "text/xml; charset=utf-8"}
        resp = ws.transport.post_xml(address, env, headers)
        r = binding.process_reply(ws, binding.get(op), resp)
        return r == ["Unstaged"], f"selected={r}", None

    step("QueryResourceProperties", query)

    def set_tt():
        want = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0)
        r = svc.SetTerminationTime(RequestedTerminationTime=want, _soapheaders=hdr)
        return r.NewTerminationTime == want, f"NewTerminationTime={r.NewTerminationTime}", None

    step("SetTerminationTime", set_tt)

    def invalid_qname():
        try:
            svc.GetResourceProperty(etree.QName(VWS, "noSuchProperty"), _soapheaders=hdr)
            return False, "no fault", None
        except Fault as f:
            d = typed_fault(ws, f, f"{{{WSRP}}}InvalidResourcePropertyQNameFault")
            ok = d is not None and d.Timestamp is not None and d.Description
            desc = d.Description[0]._value_1 if ok else f.message
            return ok, f"{type(d).__name__ if d is not None else None}: {desc} ErrorCode={error_code(d)}", None

    step("InvalidResourcePropertyQNameFault", invalid_qname)

    def wait_for(states, timeout=60):
        deadline = time.time() + timeout
        while True:
            s = current_state()
            if s in states or time.time() > deadline:
                return s
            time.sleep(0.1)

    def manager(op, answer_ok, then=None):
        def run():
            r = getattr(svc, op)(_soapheaders=hdr)
            first = r if isinstance(r, str) else getattr(r, "CurrentState", r)
            final = wait_for(then) if then else first
            ok = first in answer_ok and (then is None or final in then)
            return ok, f"answered {first}, then {final}", None

        return run

    step("deploy", manager("deploy", ["Staging", "Staged"], ["Staged"]))
    step("start", manager("start", ["Running"]))
    step("stop", manager("stop", ["Stopping", "Staged"], ["Staged"]))
    step("undeploy", manager("undeploy", ["Unstaged"]))

    def destroy():
        svc.Destroy(_soapheaders=hdr)
        return True, "destroyed", None

    step("Destroy", destroy)

    def unknown():
        try:
            svc.GetResourceProperty(etree.QName(NIMBUS, "CurrentState"), _soapheaders=hdr)
            return False, "no fault after Destroy", None
        except Fault as f:
            d = typed_fault(ws, f, f"{{{WSRP}}}ResourceUnknownFault")
            ok = d is not None and d.Timestamp is not None
            desc = d.Description[0]._value_1 if ok and d.Description else f.message
            return ok, f"{type(d).__name__ if d is not None else None}: {desc} ErrorCode={error_code(d)}", None

    step("ResourceUnknownFault", unknown)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        result("scenario", False, f"{type(e).__name__}: {e}")
    sys.exit(1 if failures else 0)
