// undici's package entry loads fetch, WebSocket, caches and more (~14 MiB of RSS); ferry needs
// only the Agent and `request`, so it imports those two files directly. Their types are undici's.
declare module 'undici/lib/dispatcher/agent.js' {
  import { Agent } from 'undici';
  export default Agent;
}

declare module 'undici/lib/api/index.js' {
  import type { Dispatcher } from 'undici';
  const api: {
    request(this: Dispatcher, opts: Dispatcher.RequestOptions): Promise<Dispatcher.ResponseData>;
  };
  export default api;
}
