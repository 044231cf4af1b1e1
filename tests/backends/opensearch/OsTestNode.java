import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;

import org.codelibs.opensearch.runner.OpenSearchRunner;

/**
 * A real single-node OpenSearch 2.19 for tests, started in-process by codelibs' OpenSearchRunner
 * (the server, netty4 HTTP and the common modules, all jars from Maven Central on the classpath).
 * Usage: OsTestNode HOME_DIR HTTP_PORT. Prints "READY port" once the cluster is up; stops on
 * SIGTERM or when stdin closes, so it cannot outlive the test process that launched it.
 */
public final class OsTestNode {
    public static void main(String[] args) throws Exception {
        Path home = Path.of(args[0]).toAbsolutePath();
        int httpPort = Integer.parseInt(args[1]);
        OpenSearchRunner runner = new OpenSearchRunner();
        runner.onBuild((number, settings) -> {
            settings.put("network.host", "127.0.0.1");
            settings.put("http.port", String.valueOf(httpPort));
            settings.put("transport.port", "0");
            settings.put("discovery.type", "single-node");
            settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
            settings.put("logger.level", "WARN");
        });
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (Exception e) {
                e.printStackTrace();
            }
            stopped.countDown();
        }));
        runner.build(OpenSearchRunner.newConfigs().basePath(home.toString()).numOfNode(1)
            .clusterName("mcp-sidecar-test").disableESLogger());
        runner.ensureYellow();
        System.out.println("READY " + httpPort);
        System.out.flush();
        Thread watchdog = new Thread(() -> {
            try {
                while (System.in.read() != -1) { }
            } catch (Exception ignored) { }
            System.exit(0);
        }, "stdin-watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
        stopped.await();
    }
}
