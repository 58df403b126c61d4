// undici's package entry loads fetch, WebSocket, caches and more (~14 MiB of RSS); ferry needs
// only the Agent (or, behind a proxy, the EnvHttpProxyAgent) and `request`, so it imports those
// files directly. Their types are undici's.
declare module 'undici/lib/dispatcher/agent.js' {
  import { Agent } from 'undici';
  export default Agent;
}

declare module 'undici/lib/dispatcher/dispatcher.js' {
  import { Dispatcher } from 'undici';
  export default Dispatcher;
}

declare module 'undici/lib/dispatcher/env-http-proxy-agent.js' {
  import { EnvHttpProxyAgent } from 'undici';
  export default EnvHttpProxyAgent;
}

declare module 'undici/lib/api/index.js' {
  import type { Dispatcher } from 'undici';
  const api: {
    request(this: Dispatcher, opts: Dispatcher.RequestOptions): Promise<Dispatcher.ResponseData>;
    connect: Dispatcher['connect'];
  };
  export default api;
}
