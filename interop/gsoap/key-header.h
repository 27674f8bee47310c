// gSOAP (soapcpp2) input beside the wsdl2h output: the workspace's resource key as a SOAP header.
// GT 4.0-style WSDLs (ours, GT 4.0's, Nimbus') do not declare the key header, so gSOAP's way to
// send it is this declaration; the value is the WorkspaceKey reference property of the EPR that
// create returned.
#import "vws.h"
struct SOAP_ENV__Header
{
    char *w__WorkspaceKey;
};
