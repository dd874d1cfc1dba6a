import XCTest

@testable import CairnCore

/// UPnP IGD codecs against the answers miniupnpd 2.3.1 gives (docs/lab-miniupnpd-notes.md).
final class UPnPTests: XCTestCase {
    func testSearchRequestAndAnswer() throws {
        let req = String(decoding: UPnP.searchRequest(), as: UTF8.self)
        XCTAssertTrue(req.hasPrefix("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n"))
        XCTAssertTrue(req.contains("ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"))
        XCTAssertTrue(req.hasSuffix("\r\n\r\n"))
        let answer = "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
            + "USN: uuid:abc::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\nSERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\n"
            + "Location: http://10.0.1.1:5000/rootDesc.xml\r\n\r\n"
        let r = try UPnP.parseSearchResponse(Array(answer.utf8))
        XCTAssertEqual(r.location, UPnP.URLParts(host: [10, 0, 1, 1], port: 5000, path: "/rootDesc.xml"))
        XCTAssertEqual(r.searchTarget, UPnP.gatewayType)
        XCTAssertEqual(r.server, "Debian/12 UPnP/1.1 MiniUPnPd/2.3.1")
        // Refused, with a reason: another status, no LOCATION, a host name, not HTTP, oversized.
        XCTAssertThrowsError(try UPnP.parseSearchResponse(Array(answer.replacingOccurrences(of: "200 OK", with: "404 Not Found").utf8)))
        XCTAssertThrowsError(try UPnP.parseSearchResponse(Array(answer.replacingOccurrences(of: "Location", with: "X-Loc").utf8)))
        XCTAssertThrowsError(try UPnP.parseSearchResponse(Array(answer.replacingOccurrences(of: "10.0.1.1", with: "router.lan").utf8))) {
            XCTAssertEqual($0 as? UPnP.ParseError, .badURL("http://router.lan:5000/rootDesc.xml"))
        }
        XCTAssertThrowsError(try UPnP.parseSearchResponse(Array("NOTIFY * HTTP/1.1\r\n\r\n".utf8)))
        XCTAssertThrowsError(try UPnP.parseSearchResponse(Array(answer.utf8) + [UInt8](repeating: 65, count: 2048)))
    }

    func testTheConnectionServiceIsFoundInTheDescription() throws {
        let xml = """
        <?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device>
        <deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
        <serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
        <controlURL>/ctl/L3F</controlURL></service></serviceList>
        <deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><deviceList><device>
        <deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><serviceList><service>
        <serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
        <serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><controlURL>/ctl/IPConn</controlURL>
        <eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList>
        </device></deviceList></device></deviceList></device></root>
        """
        let base = UPnP.URLParts(host: [10, 0, 1, 1], port: 5000, path: "/rootDesc.xml")
        let (type, control) = try UPnP.connectionService(description: Array(xml.utf8), base: base)
        XCTAssertEqual(type, "urn:schemas-upnp-org:service:WANIPConnection:1")
        XCTAssertEqual(control, UPnP.URLParts(host: [10, 0, 1, 1], port: 5000, path: "/ctl/IPConn"))
        // A relative control URL is taken against the description's directory.
        let relative = xml.replacingOccurrences(of: "<controlURL>/ctl/IPConn</controlURL>", with: "<controlURL>ctl/IPConn</controlURL>")
        XCTAssertEqual(try UPnP.connectionService(description: Array(relative.utf8), base: base).control.path, "/ctl/IPConn")
        let none = xml.replacingOccurrences(of: "WANIPConnection:1", with: "Something:1")
        XCTAssertThrowsError(try UPnP.connectionService(description: Array(none.utf8), base: base)) {
            XCTAssertEqual($0 as? UPnP.ParseError, .noConnectionService)
        }
        XCTAssertThrowsError(try UPnP.connectionService(description: [UInt8](repeating: 32, count: 70_000), base: base))
    }

    func testSOAPRequestsAndAnswers() throws {
        let control = UPnP.URLParts(host: [10, 0, 1, 1], port: 5000, path: "/ctl/IPConn")
        let service = "urn:schemas-upnp-org:service:WANIPConnection:1"
        let req = String(decoding: UPnP.addPortMapping(serviceType: service, control: control, externalPort: 4001, proto: .tcp,
                                                        internalPort: 4001, internalClient: [10, 0, 1, 2], lifetime: 3600, description: "a<b"),
                         as: UTF8.self)
        XCTAssertTrue(req.hasPrefix("POST /ctl/IPConn HTTP/1.1\r\nHost: 10.0.1.1:5000\r\n"))
        XCTAssertTrue(req.contains("SOAPAction: \"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping\"\r\n"))
        let parts = req.components(separatedBy: "\r\n\r\n")
        XCTAssertEqual(parts.count, 2)
        XCTAssertTrue(parts[0].contains("Content-Length: \(parts[1].utf8.count)"))
        for element in ["<NewExternalPort>4001</NewExternalPort>", "<NewProtocol>TCP</NewProtocol>", "<NewInternalClient>10.0.1.2</NewInternalClient>",
                        "<NewLeaseDuration>3600</NewLeaseDuration>", "<NewPortMappingDescription>a&lt;b</NewPortMappingDescription>"] {
            XCTAssertTrue(parts[1].contains(element), element)
        }
        let ok = "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">"
            + "<s:Body><u:GetExternalIPAddressResponse xmlns:u=\"\(service)\"><NewExternalIPAddress>198.18.0.11</NewExternalIPAddress>"
            + "</u:GetExternalIPAddressResponse></s:Body></s:Envelope>"
        XCTAssertEqual(try UPnP.parseSOAPResponse(Array(ok.utf8), action: "GetExternalIPAddress"), ["NewExternalIPAddress": "198.18.0.11"])
        let fault = "HTTP/1.1 500 Internal Server Error\r\n\r\n<s:Envelope><s:Body><s:Fault><faultcode>s:Client</faultcode><detail>"
            + "<UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription>"
            + "</UPnPError></detail></s:Fault></s:Body></s:Envelope>"
        XCTAssertThrowsError(try UPnP.parseSOAPResponse(Array(fault.utf8), action: "AddPortMapping")) {
            XCTAssertEqual($0 as? UPnP.ParseError, .fault(code: 718, description: "ConflictInMappingEntry"))
        }
        XCTAssertThrowsError(try UPnP.parseSOAPResponse(Array("HTTP/1.1 200 OK\r\n\r\n<x/>".utf8), action: "AddPortMapping"))
        // miniupnpd 2.3.1's answer to AddPortMapping, byte for byte: the response element is
        // empty and self-closing (the lab found this; a parser that wants a closing tag fails).
        let miniupnpd = "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nConnection: close\r\nContent-Length: 263\r\n"
            + "Server: Debian/6.18.44-fc-v509 UPnP/1.1 MiniUPnPd/2.3.1\r\nExt:\r\n\r\n<?xml version=\"1.0\"?>\r\n"
            + "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\">"
            + "<s:Body><u:AddPortMappingResponse xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:2\"/></s:Body></s:Envelope>\r\n"
        XCTAssertEqual(try UPnP.parseSOAPResponse(Array(miniupnpd.utf8), action: "AddPortMapping"), [:])
        XCTAssertThrowsError(try UPnP.parseSOAPResponse(Array(miniupnpd.utf8), action: "GetExternalIPAddress"), "another action's answer")
        // Self-closing children are empty values.
        let empty = "HTTP/1.1 200 OK\r\n\r\n<s:Envelope><s:Body><u:GetExternalIPAddressResponse><NewExternalIPAddress/>"
            + "</u:GetExternalIPAddressResponse></s:Body></s:Envelope>"
        XCTAssertEqual(try UPnP.parseSOAPResponse(Array(empty.utf8), action: "GetExternalIPAddress"), ["NewExternalIPAddress": ""])
        XCTAssertThrowsError(try UPnP.parseSOAPResponse([UInt8](repeating: 60, count: 70_000), action: "AddPortMapping"))
        XCTAssertThrowsError(try UPnP.parseSOAPResponse(Array("garbage".utf8), action: "AddPortMapping"))
    }
}

/// The UPnP mapping client over a scripted gateway.
final class UPnPMappingClientTests: XCTestCase {
    let location = "http://10.0.1.1:5000/rootDesc.xml"
    var ssdp: [UInt8] {
        Array("HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: \(location)\r\n\r\n".utf8)
    }
    let description = Array(("HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n<root><device><serviceList><service>"
        + "<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>/ctl/IPConn</controlURL>"
        + "</service></serviceList></device></root>").utf8)
    func soap(_ action: String, _ inner: String = "") -> [UInt8] {
        Array("HTTP/1.1 200 OK\r\n\r\n<s:Envelope><s:Body><u:\(action)Response>\(inner)</u:\(action)Response></s:Body></s:Envelope>".utf8)
    }

    func testDiscoversMapsAsksTheAddressRenewsAndDeletes() throws {
        var c = UPnPMappingClient(configuration: .init(proto: .tcp, internalPort: 4001, internalClient: [10, 0, 1, 2], gateway: [10, 0, 1, 1]))
        XCTAssertEqual(c.start(now: 0), [.search(UPnP.searchRequest())])
        // Another host on the LAN answering the search is ignored.
        XCTAssertEqual(try c.ssdpReceived(Array(String(decoding: ssdp, as: UTF8.self).replacingOccurrences(of: "10.0.1.1", with: "10.0.1.66").utf8), now: 0.1), [])
        let get = try c.ssdpReceived(ssdp, now: 0.1)
        let root = UPnP.URLParts(host: [10, 0, 1, 1], port: 5000, path: "/rootDesc.xml")
        XCTAssertEqual(get, [.http(root, UPnP.getRequest(root))])
        let control = UPnP.URLParts(host: [10, 0, 1, 1], port: 5000, path: "/ctl/IPConn")
        guard case .http(let url, let add)? = c.httpResponse(description, now: 0.2).first else { return XCTFail() }
        XCTAssertEqual(url, control)
        XCTAssertTrue(String(decoding: add, as: UTF8.self).contains("#AddPortMapping"))
        guard case .http(_, let ask)? = c.httpResponse(soap("AddPortMapping"), now: 0.3).first else { return XCTFail() }
        XCTAssertTrue(String(decoding: ask, as: UTF8.self).contains("#GetExternalIPAddress"))
        let done = c.httpResponse(soap("GetExternalIPAddress", "<NewExternalIPAddress>198.18.0.11</NewExternalIPAddress>"), now: 0.4)
        XCTAssertEqual(done, [.mapped(.init(dialect: .upnp, externalPort: 4001, externalAddress: [198, 18, 0, 11], lifetime: 3600), gateway: control)])
        XCTAssertEqual(c.nextDeadline() ?? 0, 1800.4, accuracy: 1e-9)
        guard case .http(_, let renew)? = c.tick(now: 1800.4).first else { return XCTFail("renewal") }
        XCTAssertTrue(String(decoding: renew, as: UTF8.self).contains("#AddPortMapping"))
        _ = c.httpResponse(soap("AddPortMapping"), now: 1800.5)
        _ = c.httpResponse(soap("GetExternalIPAddress", "<NewExternalIPAddress>198.18.0.11</NewExternalIPAddress>"), now: 1800.6)
        XCTAssertTrue(c.isMapped)
        guard case .http(_, let delete)? = c.stop().first else { return XCTFail() }
        XCTAssertTrue(String(decoding: delete, as: UTF8.self).contains("#DeletePortMapping"))
    }

    func testAFaultOrSilenceEndsTheAttempt() throws {
        var c = UPnPMappingClient(configuration: .init(proto: .udp, internalPort: 4001, internalClient: [10, 0, 1, 2], gateway: nil))
        _ = c.start(now: 0)
        _ = try c.ssdpReceived(ssdp, now: 0.1)
        _ = c.httpResponse(description, now: 0.2)
        let fault = Array(("HTTP/1.1 500 Internal Server Error\r\n\r\n<UPnPError><errorCode>718</errorCode>"
            + "<errorDescription>ConflictInMappingEntry</errorDescription></UPnPError>").utf8)
        guard case .failed(let why)? = c.httpResponse(fault, now: 0.3).first else { return XCTFail() }
        XCTAssertTrue(why.contains("718"), why)
        XCTAssertFalse(c.isMapped)
        // Nobody answers the search: three tries, then give up.
        var d = UPnPMappingClient(configuration: .init(proto: .udp, internalPort: 4001, internalClient: [10, 0, 1, 2], gateway: nil))
        _ = d.start(now: 0)
        var searches = 1, failed = false
        while let t = d.nextDeadline() {
            for a in d.tick(now: t) {
                if case .search = a { searches += 1 }
                if case .failed = a { failed = true }
            }
        }
        XCTAssertEqual(searches, 3)
        XCTAssertTrue(failed)
        XCTAssertThrowsError(try d.ssdpReceived(Array("junk".utf8), now: 10))
    }
}
