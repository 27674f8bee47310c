// The interop scenario through gSOAP stubs: `wsdl2h` (default options; interop/gsoap/typemap.dat
// only fixes the namespace prefixes) on the live ?wsdl of WorkspaceFactoryService and
// WorkspaceService, then `soapcpp2 -C` on that plus interop/gsoap/key-header.h (the resource
// key as a SOAP header: WSDLs of GT 4.0 style do not declare it). `make interop`
// (interop/run.sh) builds and runs it; it prints one line per step,
// `RESULT <step> PASS|FAIL <detail>`, from which the runner builds the table.
//
// Usage: scenario BASE_URL IMAGE_URL   (BASE_URL = http://HOST:PORT/wsrf/services)

#include "soapH.h"
#include "vws.nsmap"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <thread>

static int failures = 0;

static void result(const std::string &step, bool ok, const std::string &detail) {
    if (!ok) failures++;
    std::string d = detail;
    for (auto &c : d)
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    if (d.size() > 300) d.resize(300);
    std::printf("RESULT %s %s %s\n", step.c_str(), ok ? "PASS" : "FAIL", d.c_str());
    std::fflush(stdout);
}

static std::string fault_text(struct soap *soap) {
    const char **s = soap_faultstring(soap);
    return std::string("SOAP error ") + std::to_string(soap->error) + ": " + (s && *s ? *s : "");
}

// The text of an XML string's single element (`<w:WorkspaceKey xmlns:w="…">KEY</w:WorkspaceKey>`).
static std::string element_text(const std::string &xml) {
    size_t open = xml.find('>');
    size_t close = xml.rfind("</");
    if (open == std::string::npos || close == std::string::npos || close < open) return "";
    return xml.substr(open + 1, close - open - 1);
}

static std::string local_name(const std::string &xml) {
    size_t lt = xml.find('<');
    size_t end = xml.find_first_of(" >/", lt + 1);
    std::string q = xml.substr(lt + 1, end - lt - 1);
    size_t colon = q.find(':');
    return colon == std::string::npos ? q : q.substr(colon + 1);
}

static std::string base_fault(wsbf__BaseFaultType *f) {
    std::string d = f->Description.empty() ? "" : f->Description[0].__item;
    if (f->ErrorCode) d += " ErrorCode[" + f->ErrorCode->dialect + "]=" + f->ErrorCode->__item;
    return d;
}

struct Ws {
    struct soap *soap;
    std::string endpoint;
    std::string key;

    // Every request to the workspace carries its key header.
    void header() {
        soap->header = soap_new_SOAP_ENV__Header(soap);
        soap->header->w__WorkspaceKey = soap_strdup(soap, key.c_str());
    }

    int current_state(std::string &state) {
        header();
        _wsrp__GetResourcePropertyResponse r;
        int rc = soap_call___w__GetResourceProperty(soap, endpoint.c_str(), nullptr, "n:CurrentState", r);
        if (rc == SOAP_OK) state = r.__any.empty() ? "" : element_text(r.__any[0]);
        return rc;
    }

    std::string wait_for(const std::string &want) {
        std::string s;
        for (int i = 0; i < 600; i++) {
            if (current_state(s) != SOAP_OK) return "(" + fault_text(soap) + ")";
            if (s == want) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        return s;
    }
};

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s BASE_URL IMAGE_URL\n", argv[0]);
        return 2;
    }
    std::string base = argv[1], image = argv[2];
    struct soap *soap = soap_new1(SOAP_XML_STRICT);
    Ws ws{soap, "", ""};

    // -- create ------------------------------------------------------------------------------
    {
        _w__create req;
        w__virtualWorkspaceType d;
        w__vmCategoryType cat;
        cat.name = w__categoryNameType__vm;
        enum w__vmmType vmm = w__vmmType__xen;
        cat.vmm = &vmm;
        d.category = &cat;
        w__positiveAmountType life = "3600";
        d.lifeCycle = &life;
        w__hardwareType hw;
        w__ramType ram;
        w__amountType min = "64", max = "128";
        ram.min_ = &min;
        ram.max_ = &max;
        hw.ram = &ram;
        w__diskType disk;
        disk.name = "root";
        w__imageType img;
        img.__item = image;
        disk.image = &img;
        hw.disk.push_back(&disk);
        d.hardware = &hw;
        req.virtualWorkspace = &d;
        _w__createResponse resp;
        std::string url = base + "/WorkspaceFactoryService";
        soap->header = nullptr;
        if (soap_call___w__create(soap, url.c_str(), nullptr, &req, resp) != SOAP_OK) {
            result("create", false, fault_text(soap));
            return 1;
        }
        wsa4__EndpointReferenceType *epr = resp.wsa4__EndpointReference;
        bool ok = epr && epr->Address && epr->ReferenceProperties && epr->ReferenceProperties->__any.size() == 1 &&
                  local_name(epr->ReferenceProperties->__any[0]) == "WorkspaceKey";
        if (!ok) {
            result("create", false, "no EPR with one WorkspaceKey reference property");
            return 1;
        }
        ws.endpoint = epr->Address->__item;
        ws.key = element_text(epr->ReferenceProperties->__any[0]);
        result("create", !ws.key.empty(), "address=" + ws.endpoint + " key=" + ws.key);
    }

    // -- a description the schema allows but the reader refuses ('..' in a relative file: URL):
    // InvalidDescriptionFault, whose ErrorCode text names the element's path.
    {
        _w__create req;
        w__virtualWorkspaceType d;
        w__vmCategoryType cat;
        cat.name = w__categoryNameType__vm;
        enum w__vmmType vmm = w__vmmType__xen;
        cat.vmm = &vmm;
        d.category = &cat;
        w__hardwareType hw;
        w__diskType disk;
        disk.name = "root";
        w__imageType img;
        img.__item = "file:images/../x";
        disk.image = &img;
        hw.disk.push_back(&disk);
        d.hardware = &hw;
        req.virtualWorkspace = &d;
        _w__createResponse resp;
        std::string url = base + "/WorkspaceFactoryService";
        soap->header = nullptr;
        int rc = soap_call___w__create(soap, url.c_str(), nullptr, &req, resp);
        auto *detail = soap->fault ? soap->fault->detail : nullptr;
        auto *f = detail ? detail->w__InvalidDescriptionFault : nullptr;
        std::string code = f && f->ErrorCode ? f->ErrorCode->__item : "";
        const std::string want = "/virtualWorkspace/hardware/disk/image";
        bool ok = rc != SOAP_OK && f && code.size() >= want.size() && code.compare(code.size() - want.size(), want.size(), want) == 0;
        result("InvalidDescriptionFault", ok, f ? "w__InvalidDescriptionFaultType: ErrorCode=" + code : (rc == SOAP_OK ? "no fault" : fault_text(soap)));
    }

    // -- WS-ResourceProperties -----------------------------------------------------------------
    {
        std::string s;
        int rc = ws.current_state(s);
        result("GetResourceProperty", rc == SOAP_OK && s == "Unstaged", rc == SOAP_OK ? "CurrentState=" + s : fault_text(soap));
    }
    {
        ws.header();
        _wsrp__GetMultipleResourceProperties req;
        req.ResourceProperty.push_back("n:CurrentState");
        req.ResourceProperty.push_back("wsrl:TerminationTime");
        _wsrp__GetMultipleResourcePropertiesResponse r;
        int rc = soap_call___w__GetMultipleResourceProperties(soap, ws.endpoint.c_str(), nullptr, &req, r);
        std::string names;
        for (auto &e : r.__any) names += local_name(e) + " ";
        bool ok = rc == SOAP_OK && r.__any.size() == 2 && local_name(r.__any[0]) == "CurrentState" &&
                  local_name(r.__any[1]) == "TerminationTime";
        result("GetMultipleResourceProperties", ok, rc == SOAP_OK ? "elements=" + names : fault_text(soap));
    }
    {
        // QueryExpressionType is mixed content: the XPath is its text (gSOAP's __mixed).
        ws.header();
        _wsrp__QueryResourceProperties req;
        wsrp__QueryExpressionType q;
        std::string dialect = "http://www.w3.org/TR/1999/REC-xpath-19991116";
        q.Dialect = &dialect;
        q.__mixed = soap_strdup(soap, "//*[local-name()='CurrentState']");
        req.QueryExpression = &q;
        _wsrp__QueryResourcePropertiesResponse r;
        int rc = soap_call___w__QueryResourceProperties(soap, ws.endpoint.c_str(), nullptr, &req, r);
        bool ok = rc == SOAP_OK && r.__any.size() == 1 && local_name(r.__any[0]) == "CurrentState" &&
                  element_text(r.__any[0]) == "Unstaged";
        result("QueryResourceProperties", ok, rc == SOAP_OK ? (r.__any.empty() ? "nothing selected" : std::string("selected ") + r.__any[0]) : fault_text(soap));
    }
    // -- WS-ResourceLifetime -------------------------------------------------------------------
    {
        ws.header();
        _wsrl__SetTerminationTime req;
        time_t want = time(nullptr) + 7200;
        req.RequestedTerminationTime = &want;
        _wsrl__SetTerminationTimeResponse r;
        int rc = soap_call___w__SetTerminationTime(soap, ws.endpoint.c_str(), nullptr, &req, r);
        bool ok = rc == SOAP_OK && r.NewTerminationTime && *r.NewTerminationTime == want;
        result("SetTerminationTime", ok,
               rc == SOAP_OK ? "NewTerminationTime=" + std::to_string(r.NewTerminationTime ? (long long)*r.NewTerminationTime : 0) : fault_text(soap));
    }
    // -- typed fault: an unknown property ------------------------------------------------------
    {
        ws.header();
        _wsrp__GetResourcePropertyResponse r;
        int rc = soap_call___w__GetResourceProperty(soap, ws.endpoint.c_str(), nullptr, "w:noSuchProperty", r);
        auto *detail = soap->fault ? soap->fault->detail : nullptr;
        auto *f = detail ? detail->wsrp__InvalidResourcePropertyQNameFault : nullptr;
        result("InvalidResourcePropertyQNameFault", rc != SOAP_OK && f != nullptr,
               f ? "wsrp__InvalidResourcePropertyQNameFaultType: " + base_fault(f) : (rc == SOAP_OK ? "no fault" : fault_text(soap)));
    }
    // -- the Manager ---------------------------------------------------------------------------
    {
        ws.header();
        _w__deploy req;
        _w__deployResponse r;
        int rc = soap_call___w__deploy(soap, ws.endpoint.c_str(), nullptr, &req, r);
        std::string first = rc == SOAP_OK ? r.n__CurrentState : fault_text(soap);
        std::string then = rc == SOAP_OK ? ws.wait_for("Staged") : "";
        result("deploy", rc == SOAP_OK && then == "Staged", "answered " + first + ", then " + then);
    }
    {
        ws.header();
        _w__start req;
        _w__startResponse r;
        int rc = soap_call___w__start(soap, ws.endpoint.c_str(), nullptr, &req, r);
        result("start", rc == SOAP_OK && r.n__CurrentState == "Running", rc == SOAP_OK ? "answered " + r.n__CurrentState : fault_text(soap));
    }
    {
        ws.header();
        _w__stop req;
        _w__stopResponse r;
        int rc = soap_call___w__stop(soap, ws.endpoint.c_str(), nullptr, &req, r);
        std::string first = rc == SOAP_OK ? r.n__CurrentState : fault_text(soap);
        std::string then = rc == SOAP_OK ? ws.wait_for("Staged") : "";
        result("stop", rc == SOAP_OK && then == "Staged", "answered " + first + ", then " + then);
    }
    {
        ws.header();
        _w__undeploy req;
        _w__undeployResponse r;
        int rc = soap_call___w__undeploy(soap, ws.endpoint.c_str(), nullptr, &req, r);
        result("undeploy", rc == SOAP_OK && r.n__CurrentState == "Unstaged", rc == SOAP_OK ? "answered " + r.n__CurrentState : fault_text(soap));
    }
    {
        ws.header();
        _wsrl__Destroy req;
        _wsrl__DestroyResponse r;
        int rc = soap_call___w__Destroy(soap, ws.endpoint.c_str(), nullptr, &req, r);
        result("Destroy", rc == SOAP_OK, rc == SOAP_OK ? "destroyed" : fault_text(soap));
    }
    // -- typed fault: the destroyed resource ---------------------------------------------------
    {
        std::string s;
        int rc = ws.current_state(s);
        auto *detail = soap->fault ? soap->fault->detail : nullptr;
        auto *f = detail ? detail->wsrp__ResourceUnknownFault : nullptr;
        result("ResourceUnknownFault", rc != SOAP_OK && f != nullptr,
               f ? "wsrp__ResourceUnknownFaultType: " + base_fault(f) : (rc == SOAP_OK ? "no fault after Destroy" : fault_text(soap)));
    }
    soap_destroy(soap);
    soap_end(soap);
    soap_free(soap);
    return failures ? 1 : 0;
}
