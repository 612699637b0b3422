/**
 * The external driver (`--driver external`): the controller only decides and exports
 * `unimoe_pool_desired_replicas{pool}`; something else acts on it - on Kubernetes, KEDA or an HPA
 * scaling each pool's Deployment on that metric (infra/k8s/). What runs is read from NATS service
 * discovery, so a restarted controller starts from the replicas that serve.
 */
import type { ReplicaSnapshot } from '../observe';
import type { Driver, DriverReplica, PoolTemplate } from './driver';

export class ExternalDriver implements Driver {
  readonly kind = 'external';

  constructor(private readonly serving: () => Promise<ReplicaSnapshot[]>) {}

  async list(): Promise<DriverReplica[]> {
    return (await this.serving()).map((r) => ({ id: r.replica, template: { pool: r.pool, experts: [] } }));
  }

  /** Nothing to do here: the desired count is on /metrics for the platform's autoscaler. */
  async scale(_template: PoolTemplate, _replicas: number): Promise<void> {}

  async stopAll(): Promise<void> {}
}
