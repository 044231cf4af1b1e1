// The official TypeScript SDK client against one MCP endpoint: initialize, list tools, call one.
// usage: node ts_sdk_client.mjs URL TOOL ARGS_JSON   (env: MCP_TS_SDK_DIR = npm prefix holding
// @modelcontextprotocol/sdk, MCP_TOKEN = bearer token, sent as the Authorization header if set).
// Prints one JSON object: serverInfo, capabilities, protocolVersion, tool names, the call's result.
import { createRequire } from "node:module";
import { join } from "node:path";

const require = createRequire(join(process.env.MCP_TS_SDK_DIR, "package.json"));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");

const [url, tool, args] = process.argv.slice(2);
const headers = process.env.MCP_TOKEN ? { Authorization: `Bearer ${process.env.MCP_TOKEN}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
const client = new Client({ name: "mcp-sidecar-ts-sdk-test", version: "1.0.0" });
try {
  await client.connect(transport);
  const tools = await client.listTools();
  const result = await client.callTool({ name: tool, arguments: JSON.parse(args || "{}") });
  console.log(JSON.stringify({
    serverInfo: client.getServerVersion(),
    capabilities: client.getServerCapabilities(),
    protocolVersion: transport.protocolVersion,
    tools: tools.tools.map((t) => t.name),
    result,
  }));
  await client.close();
} catch (err) {
  console.error(`ts-sdk-client: ${err && err.message ? err.message : err}`.slice(0, 2000));
  process.exit(1);
}
