import Foundation

/// UPnP Internet Gateway Device port mapping, sans-I/O: SSDP discovery (an M-SEARCH and its
/// answer), the device description (which service to control, at which URL) and the SOAP
/// actions (AddPortMapping, DeletePortMapping, GetExternalIPAddress). Every parser has a hard
/// size limit and refuses with a reason what it cannot read. What a gateway says is a claim.
public enum UPnP {
    public static let ssdpAddress = "239.255.255.250"
    public static let ssdpPort: UInt16 = 1900
    public static let gatewayType = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
    /// The services that can map ports, in order of preference.
    public static let connectionServices = ["urn:schemas-upnp-org:service:WANIPConnection:2", "urn:schemas-upnp-org:service:WANIPConnection:1",
                                            "urn:schemas-upnp-org:service:WANPPPConnection:1"]
    /// Largest SSDP answer read (one datagram's worth of headers).
    public static let maxSSDPLength = 2048
    /// Largest device description or SOAP answer read.
    public static let maxDocumentLength = 64 * 1024

    public enum ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        case tooLong(Int)
        case notHTTP
        case status(Int)
        case missingHeader(String)
        case badURL(String)
        case noConnectionService
        case missing(String)
        case fault(code: Int, description: String)

        public var description: String {
            switch self {
            case .tooLong(let n): return "UPnP message of \(n) bytes is over the limit"
            case .notHTTP: return "UPnP message is not an HTTP response"
            case .status(let s): return "UPnP answer has HTTP status \(s)"
            case .missingHeader(let h): return "UPnP answer has no \(h) header"
            case .badURL(let u): return "UPnP URL \(u.prefix(80)) is not an http:// URL with a numeric host"
            case .noConnectionService: return "the gateway describes no WANIPConnection or WANPPPConnection service"
            case .missing(let e): return "UPnP answer has no <\(e)>"
            case .fault(let c, let d): return "the gateway answered UPnP error \(c) (\(d.prefix(80)))"
            }
        }
    }

    // MARK: SSDP

    public static func searchRequest(searchTarget: String = gatewayType) -> [UInt8] {
        Array("M-SEARCH * HTTP/1.1\r\nHOST: \(ssdpAddress):\(ssdpPort)\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\nST: \(searchTarget)\r\n\r\n".utf8)
    }

    public struct SearchResponse: Sendable, Equatable {
        public var location: URLParts
        public var searchTarget: String
        public var server: String?
    }

    /// An http:// URL with a numeric IPv4 host (a gateway on the LAN; a name would need DNS and
    /// invites rebinding tricks), its port and path.
    public struct URLParts: Sendable, Equatable {
        public var host: [UInt8]
        public var port: UInt16
        public var path: String

        public init(host: [UInt8], port: UInt16, path: String) {
            self.host = host
            self.port = port
            self.path = path
        }

        public init(parsing s: String) throws(ParseError) {
            guard s.count <= 1024, s.lowercased().hasPrefix("http://") else { throw .badURL(s) }
            let rest = s.dropFirst(7)
            let hostPort = rest.prefix { $0 != "/" }
            let path = rest.dropFirst(hostPort.count)
            let parts = hostPort.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { throw .badURL(s) }
            let octets = parts[0].split(separator: ".", omittingEmptySubsequences: false).compactMap { UInt8($0) }
            guard octets.count == 4, parts[0].split(separator: ".").count == 4 else { throw .badURL(s) }
            var port: UInt16 = 80
            if parts.count == 2 { guard let p = UInt16(parts[1]), p != 0 else { throw .badURL(s) }; port = p }
            self.init(host: octets, port: port, path: path.isEmpty ? "/" : String(path))
        }

        /// `reference` (absolute, or a path) against this URL.
        public func resolving(_ reference: String) throws(ParseError) -> URLParts {
            if reference.lowercased().hasPrefix("http://") { return try URLParts(parsing: reference) }
            guard reference.hasPrefix("/") else {
                let dir = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
                return URLParts(host: host, port: port, path: dir + "/" + reference)
            }
            return URLParts(host: host, port: port, path: reference)
        }

        public var hostHeader: String { host.map(String.init).joined(separator: ".") + ":\(port)" }
    }

    /// An answer to an M-SEARCH (`HTTP/1.1 200 OK` with LOCATION and ST headers).
    public static func parseSearchResponse(_ bytes: [UInt8]) throws(ParseError) -> SearchResponse {
        guard bytes.count <= maxSSDPLength else { throw .tooLong(bytes.count) }
        let (status, headers, _) = try parseHTTP(bytes)
        guard status == 200 else { throw .status(status) }
        guard let location = headers["location"] else { throw .missingHeader("LOCATION") }
        guard let st = headers["st"] else { throw .missingHeader("ST") }
        return SearchResponse(location: try URLParts(parsing: location), searchTarget: st, server: headers["server"])
    }

    // MARK: Device description

    /// The connection service to control, from the device description at `base`: its type and
    /// control URL.
    public static func connectionService(description xml: [UInt8], base: URLParts) throws(ParseError) -> (type: String, control: URLParts) {
        guard xml.count <= maxDocumentLength else { throw .tooLong(xml.count) }
        let text = String(decoding: xml, as: UTF8.self)
        var found: [(String, String)] = []
        for block in elements("service", in: text) {
            guard let type = elements("serviceType", in: block).first.map(unescape),
                  let control = elements("controlURL", in: block).first.map(unescape) else { continue }
            found.append((type.trimmingCharacters(in: .whitespacesAndNewlines), control.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
        for wanted in connectionServices {
            if let (type, control) = found.first(where: { $0.0 == wanted }) { return (type, try base.resolving(control)) }
        }
        throw .noConnectionService
    }

    // MARK: SOAP

    /// An HTTP POST of a SOAP action, one request per connection.
    public static func soapRequest(action: String, serviceType: String, arguments: [(String, String)], control: URLParts) -> [UInt8] {
        var body = "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" "
        body += "s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:\(action) xmlns:u=\"\(serviceType)\">"
        for (name, value) in arguments { body += "<\(name)>\(escape(value))</\(name)>" }
        body += "</u:\(action)></s:Body></s:Envelope>"
        let head = "POST \(control.path) HTTP/1.1\r\nHost: \(control.hostHeader)\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n"
            + "SOAPAction: \"\(serviceType)#\(action)\"\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        return Array((head + body).utf8)
    }

    public static func addPortMapping(serviceType: String, control: URLParts, externalPort: UInt16, proto: PortMapping.TransportProtocol,
                                      internalPort: UInt16, internalClient: [UInt8], lifetime: UInt32, description: String = "cairn") -> [UInt8] {
        soapRequest(action: "AddPortMapping", serviceType: serviceType, arguments: [
            ("NewRemoteHost", ""), ("NewExternalPort", "\(externalPort)"), ("NewProtocol", proto == .tcp ? "TCP" : "UDP"),
            ("NewInternalPort", "\(internalPort)"), ("NewInternalClient", internalClient.map(String.init).joined(separator: ".")),
            ("NewEnabled", "1"), ("NewPortMappingDescription", description), ("NewLeaseDuration", "\(lifetime)"),
        ], control: control)
    }

    public static func deletePortMapping(serviceType: String, control: URLParts, externalPort: UInt16, proto: PortMapping.TransportProtocol) -> [UInt8] {
        soapRequest(action: "DeletePortMapping", serviceType: serviceType, arguments: [
            ("NewRemoteHost", ""), ("NewExternalPort", "\(externalPort)"), ("NewProtocol", proto == .tcp ? "TCP" : "UDP"),
        ], control: control)
    }

    public static func getExternalIPAddress(serviceType: String, control: URLParts) -> [UInt8] {
        soapRequest(action: "GetExternalIPAddress", serviceType: serviceType, arguments: [], control: control)
    }

    /// The output arguments of a SOAP answer (`<NewExternalIPAddress>…`), or the UPnP error a
    /// fault carries.
    public static func parseSOAPResponse(_ bytes: [UInt8], action: String) throws(ParseError) -> [String: String] {
        guard bytes.count <= maxDocumentLength else { throw .tooLong(bytes.count) }
        let (status, _, body) = try parseHTTP(bytes)
        let text = String(decoding: body, as: UTF8.self)
        if status != 200 {
            guard let code = elements("errorCode", in: text).first.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) else {
                throw .status(status)
            }
            throw .fault(code: code, description: elements("errorDescription", in: text).first.map(unescape) ?? "")
        }
        guard let inner = elements(action + "Response", in: text).first else { throw .missing(action + "Response") }
        var out: [String: String] = [:]
        var rest = Substring(inner)
        // Each child element <Name>value</Name>.
        while let open = rest.firstIndex(of: "<") {
            let afterOpen = rest[rest.index(after: open)...]
            guard let close = afterOpen.firstIndex(of: ">") else { break }
            let name = String(afterOpen[..<close])
            if name.hasSuffix("/"), !name.hasPrefix("/"), name.count <= 65 {
                // `<NewRemoteHost/>`: an empty value.
                let bare = String(name.dropLast()).trimmingCharacters(in: .whitespaces)
                out[bare.split(separator: ":").last.map(String.init) ?? bare] = ""
                rest = afterOpen[afterOpen.index(after: close)...]
                if out.count > 32 { break }
                continue
            }
            guard !name.hasPrefix("/"), !name.isEmpty, name.count <= 64, let end = afterOpen.range(of: "</" + name + ">") else { break }
            out[name.split(separator: ":").last.map(String.init) ?? name] = unescape(String(afterOpen[afterOpen.index(after: close)..<end.lowerBound]))
            rest = afterOpen[end.upperBound...]
            if out.count > 32 { break }
        }
        return out
    }

    // MARK: Helpers

    /// Status, lower-cased headers and body of an HTTP response (headers end at a blank line).
    static func parseHTTP(_ bytes: [UInt8]) throws(ParseError) -> (Int, [String: String], ArraySlice<UInt8>) {
        let crlfcrlf: [UInt8] = [13, 10, 13, 10]
        var headerEnd = bytes.count
        if bytes.count >= 4 {
            for i in 0...(bytes.count - 4) where bytes[i..<i + 4].elementsEqual(crlfcrlf) { headerEnd = i; break }
        }
        let head = String(decoding: bytes[..<headerEnd], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        guard let statusLine = lines.first, statusLine.hasPrefix("HTTP/1."), statusLine.count <= 256 else { throw .notHTTP }
        let fields = statusLine.split(separator: " ")
        guard fields.count >= 2, let status = Int(fields[1]) else { throw .notHTTP }
        lines.removeFirst()
        var headers: [String: String] = [:]
        for line in lines.prefix(64) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let body = headerEnd + 4 <= bytes.count ? bytes[(headerEnd + 4)...] : []
        return (status, headers, body)
    }

    /// The contents of every `<name>…</name>` (any namespace prefix), in order, at most 64.
    static func elements(_ name: String, in text: String) -> [String] {
        var out: [String] = []
        var rest = Substring(text)
        while out.count < 64, let open = rest.range(of: "<") {
            let after = rest[open.upperBound...]
            guard let close = after.firstIndex(of: ">") else { break }
            let tag = after[..<close]
            let local = tag.split(separator: " ").first.map { $0.split(separator: ":").last ?? $0 } ?? ""
            rest = after[after.index(after: close)...]
            guard local == name, !tag.hasPrefix("/") else { continue }
            // `<u:AddPortMappingResponse xmlns:u="…"/>`: present and empty (miniupnpd answers so).
            if tag.hasSuffix("/") { out.append(""); continue }
            let fullName = tag.split(separator: " ").first ?? ""
            guard let end = rest.range(of: "</" + fullName + ">") else { break }
            out.append(String(rest[..<end.lowerBound]))
            rest = rest[end.upperBound...]
        }
        return out
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    static func unescape(_ s: String) -> String {
        s.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">").replacingOccurrences(of: "&quot;", with: "\"")
            .replacingOccurrences(of: "&apos;", with: "'").replacingOccurrences(of: "&amp;", with: "&")
    }
}

extension UPnP {
    /// An HTTP GET (the device description), one request per connection.
    public static func getRequest(_ url: URLParts) -> [UInt8] {
        Array("GET \(url.path) HTTP/1.1\r\nHost: \(url.hostHeader)\r\nConnection: close\r\n\r\n".utf8)
    }
}

/// Keeps one UPnP IGD port mapping, sans-I/O: SSDP search, the device description, AddPortMapping,
/// GetExternalIPAddress, renewal at half the lease, DeletePortMapping on stop. The owner sends
/// `.search` to 239.255.255.250:1900 from a UDP socket, carries out each `.http` exchange (a TCP
/// connection to the URL's host and port, the request, the whole answer until the gateway closes,
/// at most `UPnP.maxDocumentLength`), and feeds back what came. Time is seconds on any monotonic
/// clock. The external address is the gateway's claim, to be confirmed before it is advertised.
public struct UPnPMappingClient: Sendable {
    public struct Configuration: Sendable {
        public var proto: PortMapping.TransportProtocol
        public var internalPort: UInt16
        /// Our address on the LAN (the mapping's internal client).
        public var internalClient: [UInt8]
        /// The default gateway: answers naming another host are ignored (anyone on the LAN can
        /// answer an SSDP search). Nil accepts the first answer.
        public var gateway: [UInt8]?
        public var lifetime: UInt32 = 3600
        public var searchAttempts = 3
        public var searchTimeout = 1.0

        public init(proto: PortMapping.TransportProtocol, internalPort: UInt16, internalClient: [UInt8], gateway: [UInt8]?) {
            self.proto = proto
            self.internalPort = internalPort
            self.internalClient = internalClient
            self.gateway = gateway
        }
    }

    public enum Action: Sendable, Equatable {
        case search([UInt8])
        case http(UPnP.URLParts, [UInt8])
        case mapped(PortMappingClient.Mapping, gateway: UPnP.URLParts)
        case failed(String)
    }

    enum Phase: Sendable, Equatable {
        case idle
        case searching(attempt: Int, sentAt: Double)
        case describing(UPnP.URLParts)
        case adding
        case askingAddress
        case mapped(renewAt: Double)
        case stopped
        case failed
    }

    public let configuration: Configuration
    var phase: Phase = .idle
    /// The connection service found in the description.
    public private(set) var service: (type: String, control: UPnP.URLParts)?
    public private(set) var mapping: PortMappingClient.Mapping?

    public init(configuration: Configuration) { self.configuration = configuration }

    public var isMapped: Bool { if case .mapped = phase { return true }; return false }

    public mutating func start(now: Double) -> [Action] {
        guard case .idle = phase else { return [] }
        phase = .searching(attempt: 1, sentAt: now)
        return [.search(UPnP.searchRequest())]
    }

    public func nextDeadline() -> Double? {
        switch phase {
        case .searching(let attempt, let sentAt): return sentAt + configuration.searchTimeout * Double(attempt)
        case .mapped(let renewAt): return renewAt
        default: return nil
        }
    }

    public mutating func tick(now: Double) -> [Action] {
        guard let d = nextDeadline(), now >= d else { return [] }
        switch phase {
        case .searching(let attempt, _):
            guard attempt < configuration.searchAttempts else {
                phase = .failed
                return [.failed("no UPnP gateway answered the SSDP search")]
            }
            phase = .searching(attempt: attempt + 1, sentAt: now)
            return [.search(UPnP.searchRequest())]
        case .mapped:
            return add()
        default:
            return []
        }
    }

    /// A datagram that came back to the search socket.
    public mutating func ssdpReceived(_ bytes: [UInt8], now: Double) throws(UPnP.ParseError) -> [Action] {
        let r = try UPnP.parseSearchResponse(bytes)
        guard case .searching = phase else { return [] }
        guard r.searchTarget.hasPrefix("urn:schemas-upnp-org:device:InternetGatewayDevice:") else { return [] }
        if let gw = configuration.gateway, r.location.host != gw { return [] }
        phase = .describing(r.location)
        return [.http(r.location, UPnP.getRequest(r.location))]
    }

    private mutating func add() -> [Action] {
        guard let s = service else { return [] }
        phase = .adding
        let port = mapping?.externalPort ?? configuration.internalPort
        return [.http(s.control, UPnP.addPortMapping(serviceType: s.type, control: s.control, externalPort: port, proto: configuration.proto,
                                                      internalPort: configuration.internalPort, internalClient: configuration.internalClient,
                                                      lifetime: configuration.lifetime))]
    }

    /// The whole answer to the last `.http` request. A bad answer ends the attempt with `.failed`
    /// (the reason says what was wrong); nothing is thrown.
    public mutating func httpResponse(_ bytes: [UInt8], now: Double) -> [Action] {
        do {
            switch phase {
            case .describing(let location):
                service = try UPnP.connectionService(description: Array(try UPnP.parseHTTP(bytes).2), base: location)
                return add()
            case .adding:
                _ = try UPnP.parseSOAPResponse(bytes, action: "AddPortMapping")
                mapping = PortMappingClient.Mapping(dialect: .upnp, externalPort: mapping?.externalPort ?? configuration.internalPort,
                                                    externalAddress: mapping?.externalAddress, lifetime: configuration.lifetime)
                phase = .askingAddress
                let s = service!
                return [.http(s.control, UPnP.getExternalIPAddress(serviceType: s.type, control: s.control))]
            case .askingAddress:
                let out = try UPnP.parseSOAPResponse(bytes, action: "GetExternalIPAddress")
                if let text = out["NewExternalIPAddress"] {
                    let octets = text.split(separator: ".").compactMap { UInt8($0) }
                    if octets.count == 4, octets != [0, 0, 0, 0] { mapping?.externalAddress = octets }
                }
                phase = .mapped(renewAt: now + Double(configuration.lifetime) / 2)
                return [.mapped(mapping!, gateway: service!.control)]
            default:
                return []
            }
        } catch {
            phase = .failed
            return [.failed("\(error)")]
        }
    }

    /// An `.http` exchange could not be made (connection refused, timeout).
    public mutating func httpFailed(_ reason: String) -> [Action] {
        switch phase {
        case .describing, .adding, .askingAddress:
            phase = .failed
            return [.failed("UPnP gateway: \(reason)")]
        default:
            return []
        }
    }

    /// Deletes the mapping; the answer does not matter.
    public mutating func stop() -> [Action] {
        defer { phase = .stopped }
        guard let s = service, let m = mapping else { return [] }
        return [.http(s.control, UPnP.deletePortMapping(serviceType: s.type, control: s.control, externalPort: m.externalPort, proto: configuration.proto))]
    }
}
