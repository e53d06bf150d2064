// The pub/sub connection: subscribes to the queue's channels on first use, hands each message to
// `onMessage`, and after a reconnect calls `onRestored` so callers catch up on what they missed.
import type { Redis } from 'ioredis';
import { connectRedis } from '../../../common/redis.ts';

import type { BullmqContext } from './context.ts';
import { quit } from './context.ts';

export interface PubSubHandlers {
  onMessage(channel: string, message: string): void;
  onRestored(): void;
}

export class PubSub {
  private sub: Redis | undefined;
  private ready: Promise<void> | undefined;

  constructor(
    private readonly ctx: BullmqContext,
    private readonly handlers: PubSubHandlers,
  ) {}

  /** Subscribed (resolves once the SUBSCRIBE took effect). */
  ensure(): Promise<void> {
    if (this.ready) return this.ready;
    const { ctx } = this;
    const channels = ctx.keys.channels;
    const sub = connectRedis(ctx.settings.redis, { lazyConnect: true });
    let subscribed = false;
    sub.on('message', (channel: string, message: string) => this.handlers.onMessage(channel, message));
    sub.on('error', (err: unknown) => ctx.log.warn({ err }, 'pub/sub connection error'));
    sub.on('ready', () => {
      if (!subscribed || ctx.closed || this.sub !== sub) return;
      // A reconnect: ioredis has just resubscribed by itself. Once a SUBSCRIBE round trip on this
      // connection says that took effect, catch up on what was published while we were away.
      ctx.log.warn('pub/sub connection restored; catching up');
      sub.subscribe(...channels).then(
        () => {
          if (!ctx.closed && this.sub === sub) this.handlers.onRestored();
        },
        (err: unknown) => ctx.log.warn({ err }, 'could not resubscribe'),
      );
    });
    this.sub = sub;
    const ready = sub.subscribe(...channels).then(() => {
      subscribed = true;
    });
    this.ready = ready;
    ready.catch(() => {
      if (this.sub === sub) {
        this.sub = undefined;
        this.ready = undefined;
        sub.disconnect();
      }
    });
    return ready;
  }

  async close(): Promise<void> {
    const sub = this.sub;
    this.sub = undefined;
    this.ready = undefined;
    if (sub) await quit(sub);
  }
}
